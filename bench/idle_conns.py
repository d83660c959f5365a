#!/usr/bin/env python3
"""Open N keep-alive connections to a loopback HTTP server (up to 500 opening at once), send one
request on each, keep them idle, and report the server's resident memory (summed over every
--pid: a master and its workers) before and after. Loopback only; bounded.

    python3 bench/idle_conns.py --port 8080 --pid PID --conns 10000 --path /healthz
"""
import argparse
import asyncio
import resource
import ssl


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise SystemExit("no such process")


async def one(port: int, path: str, conns: list, sem: asyncio.Semaphore, tls) -> None:
    async with sem:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
        conns.append(writer)


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--pid", type=int, action="append", required=True)
    p.add_argument("--label", default="server")
    p.add_argument("--conns", type=int, default=10000)
    p.add_argument("--path", default="/")
    p.add_argument("--hold", type=float, default=2.0)
    p.add_argument("--tls", action="store_true", help="HTTPS (HTTP/1.1 by ALPN; the certificate is not checked)")
    a = p.parse_args()
    tls = None
    if a.tls:
        tls = ssl.create_default_context()
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE
        tls.set_alpn_protocols(["http/1.1"])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, a.conns + 1024), hard))
    before = sum(rss_kib(p) for p in a.pid)
    conns: list = []
    sem = asyncio.Semaphore(500)
    await asyncio.wait_for(asyncio.gather(*(one(a.port, a.path, conns, sem, tls) for _ in range(a.conns))), 120)
    await asyncio.sleep(a.hold)
    after = sum(rss_kib(p) for p in a.pid)
    print(f"{a.label}: connections={len(conns)} rss_before_kib={before} rss_after_kib={after} "
          f"rss_after_mib={after / 1024:.1f} per_conn_bytes={(after - before) * 1024 / max(1, len(conns)):.0f}")
    for w in conns:
        w.close()


asyncio.run(main())
