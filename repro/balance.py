"""The original balancing rule of DeePSiM's training script: which of D and G the next iteration updates,
decided on the raw losses of this one. A small object for any loop (`from repro import Balance`); the project's
loop (`repro.loop.Trainer`) applies it after every settled step and keeps its state in each checkpoint.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, NamedTuple

log = logging.getLogger(__name__)


class Decision(NamedTuple):
    """What `Balance.update` decides: whether the next iteration updates D and G, and the switches it made."""

    d: bool
    g: bool
    events: list[str]


@dataclass
class Balance:
    """The original balancing rule on raw losses, ratio = L_discr / L_adv (L_discr = real + fake terms before
    D's update, L_adv = D's loss on the fake labelled real after it). A small object for any loop: after each
    iteration `step_d, step_g, events = balance.update(ratio)` says which nets the next one updates (the
    project's loop uses it so; see `repro.losses.DeePSiMLoss` for a loop of your own).

    The training script's three rules, applied in its order to the same ratio after every iteration:
      1. D trains and ratio < `pause_d_below` (0.1): pause D — it wins too easily and would overfit — and
         train G;
      2. D is paused and ratio > `resume_d_above` (0.5): resume D (G trains);
      3. G trains and ratio > `pause_g_above` (10): pause G — D loses badly — and train D.
    So a paused G resumes only through rule 1, when the ratio falls back below 0.1 (which pauses D at the
    same time), not as soon as it is ≤ 10: the note's "until it falls again" read against the script, whose
    rules are the ones above (KamitaniLab copy of the paper's train.py).
    """

    pause_d_below: float = 0.1
    resume_d_above: float = 0.5
    pause_g_above: float = 10.0
    stuck_after: int = 1000  # warn when D has been paused this many consecutive steps (and every as many after)
    d_training: bool = True
    g_training: bool = True
    d_paused_steps: int = 0  # consecutive steps D has been paused, this one included
    history: list[str] = field(default_factory=list)
    updates: int = 0  # calls of update so far

    def update(self, ratio: float, step: int | None = None) -> Decision:
        """Apply the three rules to this iteration's ratio; `step` (default: the count of updates so far) only
        labels the events and the warning."""
        step = self.updates if step is None else step
        self.updates += 1
        events = []

        def switch(net: str, on: bool, why: str) -> None:
            if getattr(self, f"{net}_training") != on:
                setattr(self, f"{net}_training", on)
                events.append(f"step {step}: {'resume' if on else 'pause'} {net.upper()} ({why})")

        if self.d_training and ratio < self.pause_d_below:
            switch("d", False, f"L_discr/L_adv = {ratio:.3g} < {self.pause_d_below}")
            switch("g", True, f"ratio {ratio:.3g} < {self.pause_d_below}")
        if not self.d_training and ratio > self.resume_d_above:
            switch("d", True, f"ratio {ratio:.3g} > {self.resume_d_above}")
            switch("g", True, f"ratio {ratio:.3g} > {self.resume_d_above}")
        if self.g_training and ratio > self.pause_g_above:
            switch("g", False, f"ratio {ratio:.3g} > {self.pause_g_above}")
            switch("d", True, f"ratio {ratio:.3g} > {self.pause_g_above}")
        self.d_paused_steps = 0 if self.d_training else self.d_paused_steps + 1
        if self.d_paused_steps and self.d_paused_steps % self.stuck_after == 0:
            # The rule has no way out but a ratio above resume_d_above: a D that wins by far for this long
            # has collapsed the adversarial signal (G trains on L_adv from a frozen D). Say so loudly.
            log.warning("step %d: D paused for %d consecutive steps (L_discr/L_adv = %.3g, resumes above %s): "
                        "the discriminator may have collapsed; check the adversarial terms in stats.jsonl",
                        step, self.d_paused_steps, ratio, self.resume_d_above)
        self.history.extend(events)
        return Decision(self.d_training, self.g_training, events)

    def state_dict(self) -> dict[str, Any]:
        return {"d_training": self.d_training, "g_training": self.g_training, "d_paused_steps": self.d_paused_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.d_training, self.g_training = bool(state["d_training"]), bool(state["g_training"])
        self.d_paused_steps = int(state.get("d_paused_steps", 0))  # absent in checkpoints of older runs
