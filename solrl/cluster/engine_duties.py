"""What the distributed engine does for the run skeleton (solrl.run.Engine) besides iterating:
checkpoints and resume, evals and grids on the sampler pools (periodic ones among the pipeline's
tasks), the adapter states at the end.

A mixin of solrl.cluster.driver.Driver, kept apart so the driver is scheduling only; it uses the
driver's learner group, pools, ledger, candidate store, held rows and session.
"""

from __future__ import annotations

import pathlib

from solrl.cluster import pool_eval
from solrl.cluster.eval_tasks import Finished, eval_slices
from solrl.run import eval_due


class EngineDuties:
    def checkpoint_state(self, it: int) -> tuple[dict, dict]:
        self.faults.reached("checkpoint")
        last = self.rows.last  # iteration it's: its state was kept if later steps could end before its row
        tensors = self.runtime.get(last.saved if last.saved is not None else self.learners.checkpoint_state(self.version))
        state = {"step": last.version, "order": self.order_states.get(it + 1, self.order.state()), "log_parts": last.log_parts}
        return tensors, state | ({"precision": self.audits.state(it)} if self.audits is not None else {})

    def restore(self, tensors: dict, state: dict) -> None:
        self.learners.restore(tensors, state["step"])
        self.ledger.version, self.start_iteration = state["step"], state["iteration"]
        self.order.load_state(state["order"])
        self.store.truncate(state.get("log_parts", 0))
        if self.audits is not None and "precision" in state:  # explore resumes at the precision the run had reached
            self.audits.load_state(state["precision"])
            self.audits.apply()
        self._publish(*self.learners.weight_update(), self.version)

    def _wants_checkpoint(self) -> bool:
        return bool(self.control.checkpoints) or self.session.stopping

    def checkpoint_wanted(self) -> bool:
        last = self.rows.last  # a row held while later steps launched has a state only if it was taken then
        return self._wants_checkpoint() and (last.saved is not None or not last.held)

    def checkpointed(self, path: pathlib.Path, iteration: int) -> None:
        self.session.checkpointed(path, iteration)

    def _restarts(self) -> dict[str, int]:
        return {name: pool.restarts for name, pool in self.pools.items()} | {"learner": self.learners.generation}

    def totals(self) -> dict:
        lent = {"lent_tasks": self.dispatcher.lent_tasks} if "lent" in self.pools else {}  # cluster.lend_learners
        return {"restarts": self._restarts(), "dropped": dict(self.ledger.dropped), "duplicates": self.store.duplicates, "bytes_moved": dict(self.traffic.total)} | lent

    def adapter_states(self) -> dict:
        return pool_eval.adapter_states(self.runtime, self.learners, self.version, self.traffic)

    def _adapter(self, adapter) -> tuple[object, int]:
        """A ref to `adapter` (a learner adapter's name, or an adapter state) and its bytes; (None, 0): the base."""
        if isinstance(adapter, dict):
            return self.runtime.put(adapter), sum(t.numel() * t.element_size() for t in adapter.values())
        return pool_eval.adapter(self.learners, self.version, adapter)

    def evaluate(self, adapter, validation: bool = False) -> dict:
        return pool_eval.evaluate(self.config, self.pools, *self._adapter(adapter), self.log, self.traffic, validation)

    def grid(self, adapter):
        return pool_eval.grid(self.config, self.pools, *self._adapter(adapter), self.log, self.traffic)

    def evaluated_states(self) -> tuple[dict, int]:
        last = self.rows.last  # the row just given out: its evals measured these adapters
        refs, nbytes = last.adapters
        self.traffic.add("checkpoint", nbytes, receivers=len(refs))
        return dict(zip(refs, self.runtime.get(list(refs.values())), strict=True)), last.version

    def _start_evals(self, it: int, finished: Finished) -> None:
        """The periodic eval after `it` (eval.every), and on the validation prompts when the run
        keeps its best, as slices among the pipeline's tasks."""
        if not eval_due(self.config, it):
            return
        samplers = sum(len(pool.idle_or_busy()) for pool in pool_eval.samplers(self.pools))
        ema = pool_eval.adapter(self.learners, self.version, "ema")
        for key in ("eval", "validation") if self.config.keeps_best else ("eval",):
            finished.evals[key], slices = eval_slices(self.config, *ema, samplers, validation=key == "validation")
            self.dispatcher.evals.extend(slices)
        if self.config.keeps_best:
            finished.adapters = self.learners.adapters(self.version)
