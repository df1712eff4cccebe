"""Child-process entry points for the server search tests (spawn context)."""

from __future__ import annotations

import random

import filemem

WORDS = ["api", "sky", "blue", "login", "deploy", "timeout"]


def rewrite_child(url: str, seed: int, rounds: int) -> None:
    """Put, update and delete a few shared keys with random text, as fast as the server lets us."""
    rnd = random.Random(seed)
    with filemem.Store(url) as s:
        for _ in range(rounds):
            key = f"k{rnd.randrange(20)}"
            text = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(0, 5)))
            r = rnd.random()
            if r < 0.2:
                s.delete("race", key)
            elif r < 0.5:
                s.update("race", key, lambda v, t=text: {"text": t, "n": (v or {}).get("n", 0) + 1})
            else:
                with s.batch() as b:
                    b.put("race", key, {"text": text})
                    b.put(("race", "x"), key, text)
