"""Internal storage throughput: a file stored and read back through the Storage
protocol, as a ratio to the raw client's own put and get on the same server in the
same run (target: at most 1.2x), with the peak memory of each.

    python -m bench.storage                 # 100 MiB on SeaweedFS (S3), 3 rounds
    python -m bench.storage --store moto --mb 20 --rounds 1

The emulator is started on free 127.0.0.1 ports and stopped at the end. The raw
client is aiobotocore as the S3 storage uses it: ``put_object`` with the whole file
in memory, ``get_object`` read to the end. The protocol streams: the file goes in as
1 MiB chunks (multipart past the part size) and comes back in 1 MiB chunks. Times
are medians of the rounds; peak memory is Python's (tracemalloc) in one more round
of each, kept apart because tracing slows allocation.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import secrets
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

MiB = 1024 * 1024
#: the issue's target: protocol time / raw client time
TARGET_RATIO = 1.2


async def _chunks(data: bytes, size: int = MiB) -> AsyncIterator[bytes]:
    view = memoryview(data)
    for at in range(0, len(data), size):
        yield bytes(view[at : at + size])


async def _timed(call: Callable[[], Awaitable[Any]]) -> float:
    began = time.perf_counter()
    await call()
    return time.perf_counter() - began


async def _peak(call: Callable[[], Awaitable[Any]]) -> int:
    tracemalloc.start()
    try:
        await call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


async def measure(
    endpoint: str,
    access: str,
    secret: str,
    size: int,
    rounds: int,
    *,
    part_mb: int = 8,
    parallel_parts: int = 1,
) -> dict[str, Any]:
    """Time the raw client and the protocol on one S3 server; a JSON-able report."""
    from aiobotocore.session import get_session

    from backends.storage_s3 import S3Storage

    data = secrets.token_bytes(size)
    digest = hashlib.sha256(data).hexdigest()
    bucket = f"bench-{secrets.token_hex(4)}"
    options: dict[str, Any] = {
        "region_name": "us-east-1",
        "endpoint_url": endpoint,
        "aws_access_key_id": access,
        "aws_secret_access_key": secret,
    }
    storage = S3Storage(
        bucket,
        endpoint_url=endpoint,
        access_key_id=access,
        secret_access_key=secret,
        part_size=part_mb * MiB,
        parallel_parts=parallel_parts,
    )
    async with get_session().create_client("s3", **options) as raw:
        await raw.create_bucket(Bucket=bucket)
        await storage.start()
        try:

            async def raw_put() -> None:
                await raw.put_object(Bucket=bucket, Key="raw.bin", Body=data)

            async def raw_get() -> None:
                answer = await raw.get_object(Bucket=bucket, Key="raw.bin")
                async with answer["Body"] as body:
                    got = await body.read()
                assert len(got) == size

            async def ours_put() -> None:
                await storage.put("bench", "ours.bin", _chunks(data))

            async def ours_get() -> None:
                check = hashlib.sha256()
                async for chunk in storage.open("kestra:///bench/ours.bin", chunk_size=MiB):
                    check.update(chunk)
                assert check.hexdigest() == digest

            times: dict[str, list[float]] = {k: [] for k in ("raw_put", "raw_get", "put", "get")}
            # Interleaved, so a noisy neighbour slows both sides alike.
            for _ in range(rounds):
                times["raw_put"].append(await _timed(raw_put))
                times["put"].append(await _timed(ours_put))
                times["raw_get"].append(await _timed(raw_get))
                times["get"].append(await _timed(ours_get))
            peaks = {
                "raw_put": await _peak(raw_put),
                "put": await _peak(ours_put),
                "raw_get": await _peak(raw_get),
                "get": await _peak(ours_get),
            }
        finally:
            await storage.stop()
    median = {name: statistics.median(values) for name, values in times.items()}
    return {
        "size_bytes": size,
        "rounds": rounds,
        "part_mb": part_mb,
        "parallel_parts": parallel_parts,
        "seconds": median,
        "mib_per_second": {name: size / MiB / value for name, value in median.items()},
        "ratio": {
            "put": median["put"] / median["raw_put"],
            "get": median["get"] / median["raw_get"],
        },
        "peak_mib": {name: value / MiB for name, value in peaks.items()},
        # The raw client holds the file (its put takes bytes, its read returns them);
        # the protocol streams, so its peak does not grow with the file.
        "target_ratio": TARGET_RATIO,
    }


def markdown(store: str, report: dict[str, Any]) -> str:
    s, peak, ratio = report["seconds"], report["peak_mib"], report["ratio"]
    size = report["size_bytes"] / MiB
    lines = [
        f"## Storage: {size:.0f} MiB on {store} (median of {report['rounds']}; "
        f"{report['part_mb']} MiB parts, {report['parallel_parts']} at a time)",
        "",
        "| step | raw client | protocol | ratio (target <= 1.2) | peak MiB raw / protocol |",
        "|---|---|---|---|---|",
    ]
    for step in ("put", "get"):
        lines.append(
            f"| {step} | {s['raw_' + step]:.2f} s | {s[step]:.2f} s | {ratio[step]:.2f}x | "
            f"{peak['raw_' + step]:.0f} / {peak[step]:.0f} |"
        )
    return "\n".join(lines)


async def run(
    store: str, size_mb: int, rounds: int, *, part_mb: int = 8, parallel_parts: int = 1
) -> dict[str, Any]:
    from backends.testing import emulators

    with tempfile.TemporaryDirectory(prefix="runtime-bench-storage-") as scratch:
        starter = (
            emulators.seaweedfs(Path(scratch) / "data")
            if store == "seaweedfs"
            else (emulators.moto(Path(scratch)))
        )
        with starter as server:
            return await measure(
                server.endpoint,
                server.access_key,
                server.secret_key,
                size_mb * MiB,
                rounds,
                part_mb=part_mb,
                parallel_parts=parallel_parts,
            )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.storage", description=__doc__.splitlines()[0])
    p.add_argument("--store", choices=("seaweedfs", "moto"), default="seaweedfs")
    p.add_argument("--mb", type=int, default=100, help="the file's size in MiB (default 100)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--part-mb", type=int, default=8, help="storage.part_size_mb (default 8)")
    p.add_argument(
        "--parallel-parts", type=int, default=1, help="storage.parallel_parts (default 1)"
    )
    p.add_argument("--json", type=Path, help="also write the report there")
    args = p.parse_args(argv)
    report = asyncio.run(
        run(
            args.store,
            args.mb,
            args.rounds,
            part_mb=args.part_mb,
            parallel_parts=args.parallel_parts,
        )
    )
    print(markdown(args.store, report))
    if args.json:
        args.json.write_text(json.dumps({"store": args.store, **report}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
