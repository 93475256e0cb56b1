"""Container probes as the kubelet runs them: exec (a command, success on
exit 0), httpGet (success on a 2xx or 3xx answer), tcpSocket (success when
a connection opens), each within its timeoutSeconds, every periodSeconds
after initialDelaySeconds, and judged over successThreshold /
failureThreshold consecutive results."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

Object = dict[str, Any]


@dataclass(frozen=True)
class ProbeSpec:
    handler: Object
    initial_delay: float = 0.0
    period: float = 10.0
    timeout: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3

    @classmethod
    def parse(cls, probe: Object) -> ProbeSpec:
        return cls(
            handler=probe,
            initial_delay=float(probe.get("initialDelaySeconds", 0)),
            period=float(probe.get("periodSeconds", 10)),
            timeout=float(probe.get("timeoutSeconds", 1)),
            success_threshold=int(probe.get("successThreshold", 1)),
            failure_threshold=int(probe.get("failureThreshold", 3)),
        )


def _port(value: Any, ports: dict[str, int]) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    if isinstance(value, str) and value in ports:
        return ports[value]
    raise ValueError(f"port {value!r} is not a number or a named port of the container")


# Runs a command in the container: (argv, timeout) -> (exit code, output).
Exec = Callable[[list[str], float], Awaitable[tuple[int, str]]]


async def run_probe(
    handler: Object, timeout: float, host: str, exec_in: Exec, ports: dict[str, int]
) -> tuple[bool, str]:
    """One probe: (succeeded, what it saw)."""
    try:
        async with asyncio.timeout(timeout):
            if "exec" in handler:
                command = [str(c) for c in (handler["exec"] or {}).get("command") or []]
                if not command:
                    return False, "exec probe with no command"
                code, output = await exec_in(command, timeout)
                return code == 0, output
            if "httpGet" in handler:
                get = handler["httpGet"] or {}
                scheme = str(get.get("scheme") or "HTTP").lower()
                target = get.get("host") or host
                path = str(get.get("path") or "/")
                url = (
                    f"{scheme}://{target}:{_port(get.get('port'), ports)}{path if path.startswith('/') else '/' + path}"
                )
                headers = {h["name"]: h["value"] for h in get.get("httpHeaders") or () if "name" in h}
                headers.setdefault("User-Agent", "kube-probe/1.33")
                async with (
                    aiohttp.ClientSession() as session,
                    session.get(url, headers=headers, ssl=False, allow_redirects=False) as resp,
                ):
                    return 200 <= resp.status < 400, f"HTTP probe failed with statuscode: {resp.status}"
            if "tcpSocket" in handler:
                sock = handler["tcpSocket"] or {}
                _, writer = await asyncio.open_connection(sock.get("host") or host, _port(sock.get("port"), ports))
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
                return True, ""
            return False, "the probe has no handler (exec, httpGet or tcpSocket)"
    except TimeoutError:
        return False, f"probe timed out after {timeout:g}s"
    except (OSError, aiohttp.ClientError, ValueError) as e:
        return False, str(e) or type(e).__name__


class Prober:
    """Runs one probe of one container until cancelled, calling `on_change`
    with each new verdict (True: passing)."""

    def __init__(
        self,
        spec: ProbeSpec,
        probe: Callable[[], Awaitable[tuple[bool, str]]],
        on_change: Callable[[bool, str], None],
        initially: bool = False,
    ):
        self.spec = spec
        self.probe = probe
        self.on_change = on_change
        self.passing = initially
        self.last_message = ""

    async def run(self) -> None:
        await asyncio.sleep(self.spec.initial_delay)
        successes = failures = 0
        while True:
            ok, message = await self.probe()
            self.last_message = message
            if ok:
                successes, failures = successes + 1, 0
                if not self.passing and successes >= self.spec.success_threshold:
                    self.passing = True
                    self.on_change(True, message)
            else:
                successes, failures = 0, failures + 1
                if failures == self.spec.failure_threshold:  # once per failing streak
                    self.passing = False
                    self.on_change(False, message)
            await asyncio.sleep(self.spec.period)
