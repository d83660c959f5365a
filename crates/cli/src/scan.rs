//! `portcullis scan`: the dynamic tester against a running API. Exit codes: 0 nothing at or
//! above `--fail-on`, 1 findings at or above it, 2 the scan could not run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::ValueEnum;
use portcullis_scan::{ScanConfig, Severity};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Format {
    Text,
    Json,
    Sarif,
    Junit,
    Html,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ScanArgs {
    /// Base URL of the running API (loopback unless --allow-remote).
    #[arg(long)]
    target: String,
    /// The API's OpenAPI description: a file, or a URL (loopback unless --allow-remote).
    #[arg(long)]
    spec: String,
    /// A YAML map of parameter or property names to values the description cannot provide
    /// (`product_id: prod_K3y8Qm2LpX`).
    #[arg(long)]
    seeds: Option<PathBuf>,
    /// No live progress on the terminal.
    #[arg(long)]
    quiet: bool,
    /// YAML file of identities: user A, user B, optionally an admin (static tokens or login
    /// recipes).
    #[arg(long)]
    identities: PathBuf,
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Write the report here instead of standard output.
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Exit 1 when a finding is at least this severe: info, low, medium, high, critical.
    #[arg(long, default_value = "medium")]
    fail_on: String,
    /// Most requests the scan may send.
    #[arg(long, default_value_t = 3000)]
    budget: u32,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Requests per second at most.
    #[arg(long, default_value_t = 200)]
    rate: u32,
    /// Only these probes (comma-separated).
    #[arg(long, value_delimiter = ',')]
    probes: Vec<String>,
    /// A file of accepted finding fingerprints (see `--write-baseline`): those are not
    /// reported.
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// Write the fingerprints of this scan's findings here, to accept them.
    #[arg(long)]
    write_baseline: Option<PathBuf>,
    /// Also delete and change objects the scan did not create.
    #[arg(long)]
    allow_destructive: bool,
    /// Allow a target outside loopback. Only for APIs you are allowed to attack.
    #[arg(long)]
    allow_remote: bool,
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("portcullis scan: {msg}");
    ExitCode::from(2)
}

pub(crate) fn run(args: ScanArgs, runtime: &tokio::runtime::Runtime) -> ExitCode {
    let Some(fail_on) = Severity::parse(&args.fail_on) else {
        return fail(format!(
            "severity `{}` is not info, low, medium, high or critical",
            args.fail_on
        ));
    };
    let target = match args.target.parse() {
        Ok(t) => t,
        Err(e) => return fail(format!("--target `{}`: {e}", args.target)),
    };
    let spec = if args.spec.starts_with("http://") || args.spec.starts_with("https://") {
        let url = match args.spec.parse() {
            Ok(u) => u,
            Err(e) => return fail(format!("--spec `{}`: {e}", args.spec)),
        };
        let dir = std::env::temp_dir().join(format!("portcullis-scan-{}", std::process::id()));
        match runtime.block_on(portcullis_scan::fetch_spec(&url, args.allow_remote, &dir)) {
            Ok(p) => p,
            Err(e) => return fail(e),
        }
    } else {
        PathBuf::from(&args.spec)
    };
    let mut config = ScanConfig::new(target, &spec);
    if let Some(seeds) = &args.seeds {
        config.seeds = match portcullis_scan::load_seeds(seeds) {
            Ok(s) => s,
            Err(e) => return fail(e),
        };
    }
    config.identities = match portcullis_scan::load_identities(&args.identities) {
        Ok(i) => i,
        Err(e) => return fail(e),
    };
    config.budget = args.budget;
    config.concurrency = args.concurrency.max(1);
    config.rate_per_sec = args.rate.max(1);
    config.probes = args.probes;
    config.allow_destructive = args.allow_destructive;
    config.allow_remote = args.allow_remote;
    if let Some(b) = &args.baseline {
        config.accepted = match portcullis_scan::load_accepted(b) {
            Ok(a) => a,
            Err(e) => return fail(e),
        };
    }
    // The live view: one step per probe, on standard error (hidden when it is not a terminal).
    let bar = if args.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        let n = if config.probes.is_empty() {
            portcullis_scan::PROBES.len()
        } else {
            config.probes.len()
        };
        let bar = indicatif::ProgressBar::new(n as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{bar:24}] {pos}/{len} {msg} ({elapsed})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        bar
    };
    let shown = bar.clone();
    config.progress = Some(portcullis_scan::Progress(std::sync::Arc::new(
        move |probe, sent| {
            shown.inc(1);
            shown.set_message(format!("{probe}, {sent} requests sent"));
        },
    )));
    let report = runtime.block_on(portcullis_scan::run(config));
    bar.finish_and_clear();
    let report = match report {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let text = match args.format {
        Format::Text => report.summary(),
        Format::Json => report.to_json(),
        Format::Sarif => report.to_sarif(),
        Format::Junit => match report.to_junit(fail_on) {
            Ok(j) => j,
            Err(e) => return fail(e),
        },
        Format::Html => report.to_html(),
    };
    if let Err(e) = crate::lint::emit(&text, args.output.as_ref()) {
        return fail(e);
    }
    if let Some(p) = &args.write_baseline
        && let Err(e) = std::fs::write(p, report.to_baseline())
    {
        return fail(format!("cannot write {}: {e}", p.display()));
    }
    if args.output.is_some() {
        // The summary still goes to the terminal.
        eprint!("{}", report.summary());
    }
    if !report.reached {
        return fail(
            "no identity got past authentication on any secured operation (tokens expired or refused, a wrong target, or nothing listening where the scan connects): nothing behind authentication was tested",
        );
    }
    if portcullis_scan::exit_code(&report.findings, fail_on) != 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
