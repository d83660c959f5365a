//! `portcullis lint`: the static audit of an OpenAPI description. Exit codes: 0 nothing at or
//! above `--fail-on`, 1 findings at or above it, 2 the description or the configuration could
//! not be used.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::ValueEnum;
use portcullis_lint::{Options, Profile, Severity};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Format {
    Text,
    Json,
    Sarif,
    Junit,
}

#[derive(Debug, clap::Args)]
pub(crate) struct LintArgs {
    /// The OpenAPI description (YAML or JSON); `$ref`s to sibling files are followed.
    #[arg(required_unless_present_any = ["explain", "list_rules"])]
    spec: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// strict (every rule), default (design flaws), relaxed (high severity only).
    #[arg(long)]
    profile: Option<String>,
    /// Exit 1 when a finding is at least this severe: info, low, medium, high, critical.
    #[arg(long)]
    fail_on: Option<String>,
    /// A YAML file: `profile`, `fail_on`, `disable: [rule ids]`.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print what a rule checks and how to fix it.
    #[arg(long, value_name = "RULE")]
    explain: Option<String>,
    /// List the rules.
    #[arg(long)]
    list_rules: bool,
    /// Write the report here instead of standard output.
    #[arg(long, short)]
    output: Option<PathBuf>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    profile: Option<String>,
    fail_on: Option<String>,
    #[serde(default)]
    disable: Vec<String>,
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("portcullis lint: {msg}");
    ExitCode::from(2)
}

/// Writes a report to `output`, or to standard output (shared with `scan`).
pub(crate) fn emit(text: &str, output: Option<&PathBuf>) -> Result<(), String> {
    use std::io::Write as _;
    match output {
        Some(p) => {
            std::fs::write(p, text).map_err(|e| format!("cannot write {}: {e}", p.display()))
        }
        None => std::io::stdout()
            .write_all(text.as_bytes())
            .map_err(|e| format!("cannot write the report: {e}")),
    }
}

pub(crate) fn run(args: LintArgs) -> ExitCode {
    if args.list_rules {
        let mut out = String::new();
        for r in portcullis_lint::rules::ALL {
            out.push_str(&format!(
                "{:34} {:10} {:8} {}{}\n",
                r.id,
                r.owasp,
                r.severity.name(),
                r.title,
                if r.strict_only { " (strict)" } else { "" }
            ));
        }
        return match emit(&out, args.output.as_ref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e),
        };
    }
    if let Some(id) = &args.explain {
        let Some(r) = portcullis_lint::rules::find(id) else {
            return fail(format!("no rule `{id}` (see --list-rules)"));
        };
        let text = format!(
            "{} ({}, CWE-{}, {}{})\n\n{}\n\n{}\n\nFix: {}\n",
            r.id,
            r.owasp,
            r.cwe,
            r.severity.name(),
            if r.strict_only {
                ", strict profile"
            } else {
                ""
            },
            r.title,
            r.explain,
            r.fix
        );
        return match emit(&text, args.output.as_ref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e),
        };
    }
    let config = match &args.config {
        None => Config::default(),
        Some(p) => match std::fs::read_to_string(p) {
            Err(e) => return fail(format!("cannot read {}: {e}", p.display())),
            Ok(text) => match serde_saphyr::from_str::<Config>(&text) {
                Ok(c) => c,
                Err(e) => return fail(format!("{}: {e}", p.display())),
            },
        },
    };
    for id in &config.disable {
        if portcullis_lint::rules::find(id).is_none() {
            return fail(format!("disable: no rule `{id}` (see --list-rules)"));
        }
    }
    let profile = match args.profile.as_deref().or(config.profile.as_deref()) {
        None => Profile::Default,
        Some(p) => match Profile::parse(p) {
            Some(p) => p,
            None => return fail(format!("profile `{p}` is not strict, default or relaxed")),
        },
    };
    let fail_on = match args.fail_on.as_deref().or(config.fail_on.as_deref()) {
        None => Severity::Medium,
        Some(s) => match Severity::parse(s) {
            Some(s) => s,
            None => {
                return fail(format!(
                    "severity `{s}` is not info, low, medium, high or critical"
                ));
            }
        },
    };
    let Some(spec) = args.spec else {
        return fail("give the description to lint");
    };
    if !spec.is_file() {
        return fail(format!("cannot read {}", spec.display()));
    }
    let report = portcullis_lint::lint_file(
        &spec,
        &Options {
            profile,
            disabled: config.disable,
        },
    );
    let text = match args.format {
        Format::Text => report.to_text(),
        Format::Json => format!("{:#}\n", report.to_json()),
        Format::Sarif => format!("{:#}\n", report.to_sarif()),
        Format::Junit => report.to_junit(),
    };
    if let Err(e) = emit(&text, args.output.as_ref()) {
        return fail(e);
    }
    // Unusable input, or input read only in part (a Swagger 2.0 file, no `openapi` field, a
    // `$ref` not followed): whatever the threshold, nothing says the description is clean.
    if report.files.root().is_none()
        || report
            .findings
            .iter()
            .any(|f| f.rule == portcullis_lint::engine::LOAD_RULE.id)
    {
        return ExitCode::from(2);
    }
    if report.at_least(fail_on) > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
