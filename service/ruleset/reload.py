"""Picking up a changed rule set without a restart, but only once it validates.

Every ``OSTEOGUARD_RULES_RELOAD_S`` seconds the rules folder is fingerprinted (the content of
every rule file; scenario cases excluded). When it changes, the new set is loaded, its
templates are checked and it is compiled, all off the event loop; only then does it replace
the one being served. A broken set never replaces a working one: the service keeps serving
the old set, logs the problems, and stays ready. Kubernetes updates a mounted ConfigMap by
swapping a symlink, which changes the fingerprint like any edit.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from pathlib import Path

import anyio

from service.engine.adapter import RuleEngine
from service.errors import RuleSetError, ServiceError
from service.metrics import RULESET, RULESET_RELOADS
from service.pipeline.registry import Registry
from service.ruleset.check import check_templates
from service.ruleset.loader import load_ruleset
from service.ruleset.model import RuleSet

log = logging.getLogger("osteoguard.rules")
RETIRE_AFTER_S = 60.0  # an in-flight call may still hold the old engine this long


def fingerprint(root: Path) -> str:
    """A hash of every rule file below ``root`` (not the scenario cases)."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.yaml")):
        if "cases" in path.relative_to(root).parts:
            continue
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def build(root: Path) -> tuple[RuleSet, RuleEngine]:
    """Load, check and compile a rule set; raises RuleSetError/EngineError when it is broken."""
    ruleset = load_ruleset(root)
    problems = check_templates(ruleset)
    if problems:
        raise RuleSetError(problems)
    return ruleset, RuleEngine(ruleset)


class RuleReloader:
    def __init__(self, registry: Registry, root: Path, interval_s: float) -> None:
        self.registry = registry
        self.root = root
        self.interval_s = interval_s
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
        """Reload if the files changed and the new set is good; True when a new set went live."""
        try:
            current = await anyio.to_thread.run_sync(fingerprint, self.root)
        except OSError as exc:
            log.error("rules folder unreadable; keeping the rule set in service", extra={"error": str(exc)})
            return False
        if current == self.seen:
            return False
        self.seen = current  # a broken set is reported once, not on every tick
        try:
            ruleset, engine = await anyio.to_thread.run_sync(build, self.root)
        except ServiceError as exc:
            RULESET_RELOADS.labels("rejected").inc()
            problems = exc.problems if isinstance(exc, RuleSetError) else [exc.message]
            log.error(
                "changed rule set rejected; keeping the one in service", extra={"problems": problems[:20]}
            )
            return False
        old = self.registry.install(ruleset, engine)
        asyncio.get_running_loop().call_later(RETIRE_AFTER_S, old.close)
        RULESET.info({"name": ruleset.name, "version": ruleset.version})
        RULESET_RELOADS.labels("loaded").inc()
        log.info("rule set reloaded", extra={"ruleset": ruleset.name, "version": ruleset.version})
        return True

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.check_once()
