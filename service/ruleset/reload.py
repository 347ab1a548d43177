"""Picking up a changed rule set without a restart: all of it, once it is acceptable, or nothing.

Every ``OSTEOGUARD_RULES_RELOAD_S`` seconds the rules folder is fingerprinted: every file and
folder name and every file's content, scenario cases included (they gate the reload, so a
changed case is a reason to judge the set again). When it changes, the new set is judged by
:func:`service.ruleset.check.assess`, the same judge as ``osteoguard rules check``: the
manifest and the folder, the files, the templates, the engine, and the set's own scenario
cases run against the new engine. That takes about a second, all in a worker thread, so
calls keep being answered meanwhile.

The folder may change while it is read (an editor writing a file, a ConfigMap's symlink
swapped): it is fingerprinted again after the judgement, and a set is taken only when both
fingerprints are equal, else it is judged again on the next tick. Any problem refuses the
whole set: the old one keeps serving, ``/readyz`` stays green,
``osteoguard_ruleset_reloads_total{outcome="rejected"}`` counts it and one log line lists the
problems (the first 20). Kubernetes updates a mounted ConfigMap by swapping a symlink, which
changes the fingerprint like any edit.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

import anyio

from service.metrics import RULESET, RULESET_RELOADS
from service.pipeline.registry import Registry
from service.ruleset.check import Verdict, assess

log = logging.getLogger("osteoguard.rules")
RETIRE_AFTER_S = 60.0  # an in-flight call may still hold the old engine this long
MAX_LOGGED = 20  # problems in the one log line of a refused set


def fingerprint(root: Path) -> str:
    """A hash of the folder as the loader sees it: names and content, symlinks followed.

    Names starting with ``.`` are left out: a ConfigMap's ``..data`` and ``..<timestamp>``
    entries are the same files again, reached through the visible symlinks.
    """
    digest = hashlib.sha256()
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        here = Path(folder)
        digest.update(b"D" + here.relative_to(root).as_posix().encode() + b"\0")
        for name in sorted(f for f in files if not f.startswith(".")):
            path = here / name
            digest.update(b"F" + path.relative_to(root).as_posix().encode() + b"\0")
            try:
                content = path.read_bytes()
            except FileNotFoundError:  # removed between listing and reading: a change
                content = b"\0gone"
            digest.update(hashlib.sha256(content).digest())
    return digest.hexdigest()


class RuleReloader:
    """Polls the rules folder and installs a changed set in the registry once it is acceptable.

    ``judge`` is :func:`service.ruleset.check.assess`; tests pass one that changes the folder
    while it is being read.
    """

    def __init__(
        self,
        registry: Registry,
        root: Path,
        interval_s: float,
        *,
        judge: Callable[[Path], Verdict] = assess,
    ) -> None:
        self.registry = registry
        self.root = root
        self.interval_s = interval_s
        self.judge = judge
        self.seen = fingerprint(root)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.interval_s > 0:
            self._task = asyncio.create_task(self._run(), name="osteoguard-rules-reload")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def check_once(self) -> bool:
        """Reload if the files changed and the new set is acceptable; True when it went live."""
        try:
            before = await anyio.to_thread.run_sync(fingerprint, self.root)
        except OSError as exc:
            log.error("rules folder unreadable; keeping the rule set in service", extra={"error": str(exc)})
            return False
        if before == self.seen:
            return False
        try:
            verdict = await anyio.to_thread.run_sync(self.judge, self.root)
        except Exception as exc:  # noqa: BLE001 - whatever breaks the judge, the old set keeps serving
            verdict = Verdict(None, None, [f"{self.root}:1: the rule set could not be judged: {exc!r}"])
        try:
            after = await anyio.to_thread.run_sync(fingerprint, self.root)
        except OSError:
            after = ""
        if after != before:
            # Judged while it changed: what was read may be half old, half new. Not taken, and
            # not remembered as seen, so the settled folder is judged on the next tick.
            if verdict.engine is not None:
                verdict.engine.close()
            RULESET_RELOADS.labels("unsettled").inc()
            log.warning("rules folder changed while it was read; judging it again on the next tick")
            return False
        self.seen = after  # a refused set is reported once, not on every tick
        if not verdict.ok or verdict.ruleset is None or verdict.engine is None:
            RULESET_RELOADS.labels("rejected").inc()
            log.error(
                "changed rule set rejected; keeping the one in service",
                extra={"problems": verdict.problems[:MAX_LOGGED], "problem_count": len(verdict.problems)},
            )
            return False
        ruleset, engine = verdict.ruleset, verdict.engine
        old = self.registry.install(ruleset, engine)
        asyncio.get_running_loop().call_later(RETIRE_AFTER_S, old.close)
        RULESET.info({"name": ruleset.name, "version": ruleset.version})
        RULESET_RELOADS.labels("loaded").inc()
        log.info(
            "rule set reloaded",
            extra={"ruleset": ruleset.name, "version": ruleset.version, "cases": verdict.cases},
        )
        return True

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.check_once()
