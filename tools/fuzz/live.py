"""Does `envoy --mode validate` agree with a live Envoy fed over ADS?

Some checks run only when a proxy applies a config (RE2 program size, for one), so a
sample of accepted mutants goes, one after another, through the real control plane
(tests/harness.py's ControlPlane) to a real Envoy sidecar; each one's verdict (any
`update_rejected` while it is in force) is compared with validate mode's on the same
published resources.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from controlplane.model.parse import Object, key_of, parse_object
from tools.fuzz.envoy import Validator, to_static
from tools.fuzz.mutate import Mutant, load_seeds, mutant
from tools.fuzz.publish import NAMESPACE, publish


@dataclass
class LiveResult:
    index: int
    validate_error: str | None  # validate mode's message, None when it accepts
    live_rejections: dict[str, int]  # Envoy's update_rejected counters that moved


def _accepted(m: Mutant) -> list[Object] | None:
    try:
        return [parse_object(d) for d in m.docs]
    except Exception:  # rejected (or a finding the main run reports): not for this check
        return None


def sample(seed: int, k: int, start: int, total: int) -> list[tuple[Mutant, list[Object]]]:
    """Up to k accepted mutants of the run, spread evenly over it."""
    seeds = load_seeds()
    step = max(1, total // max(1, k * 3))
    out = []
    for index in range(start, start + total, step):
        m = mutant(seeds, seed, index)
        objects = _accepted(m)
        if objects is not None:
            out.append((m, objects))
        if len(out) >= k:
            break
    return out


def compare_live(seed: int, k: int, *, start: int = 0, total: int = 1000) -> list[LiveResult]:
    """Feed k accepted mutants to a live Envoy; print and return the disagreements."""
    from tests.harness import ControlPlane, Envoy, wait_until

    validator = Validator()
    picked = sample(seed, k, start, total)
    plane = ControlPlane()
    # A loopback address of its own: the sidecar's listeners really bind.
    bind_ip = f"127.77.{os.getpid() % 250}.{(os.getpid() // 250) % 250 + 1}"
    envoy = Envoy("fuzz-live", plane.port, instance_ip=bind_ip, namespace=NAMESPACE)
    mismatches: list[LiveResult] = []
    try:
        envoy.wait_ready(30)
        previous: list[Object] = []
        for m, objects in picked:
            before = envoy.update_rejected()
            generation = plane.generation()

            def swap(old: list[Object] = previous, new: list[Object] = objects) -> None:
                keys = {key_of(o) for o in new}
                for o in old:
                    if key_of(o) not in keys:
                        plane.store.delete(key_of(o))
                for o in new:
                    plane.store.apply(o)
            plane.run(swap)
            previous = objects
            wait_until(lambda g=generation: plane.generation() > g, 10,
                       what="a new snapshot")
            target = plane.generation()

            def settled(t: int = target) -> bool:
                proxies = plane.registry.by_node("fuzz-live")
                return bool(proxies) and all(
                    p.complete_generation >= t
                    and all(s.answered for s in p.types.values() if s.sent_nonce)
                    for p in proxies)
            wait_until(lambda: plane.run(settled), 15, what="the sidecar's answers")
            after = envoy.update_rejected()
            moved = {name: n - before.get(name, 0) for name, n in after.items()
                     if n != before.get(name, 0)}
            published = publish(objects)
            error = validator.validate([to_static(m.index, published.resources)])
            result = LiveResult(m.index, error, moved)
            if (error is None) != (not moved):
                mismatches.append(result)
        print(f"live ADS check: {len(picked)} accepted mutants, "
              f"{len(mismatches)} disagreements with validate mode")
        for r in mismatches:
            print(f"  mutant {r.index}: validate={r.validate_error!r} live={r.live_rejections}")
    finally:
        envoy.stop()
        plane.stop()
    return mismatches
