"""`oracle`: the reference row "what this learner and schedule reach with the true labels".

Not a PLL method: PRODEN's training on candidate sets from the `oracle` source, in which every set is {y} (the shared
generator at rate 0), so its loss is plain cross-entropy on the true label. The labels stay inside the candidate
generator: like every method it sees only the candidate matrix, and the label-hiding test holds for it too.
Leaderboards print it as a reference, outside the ranking, with each method's gap to it.
"""

from __future__ import annotations

from pllbench.method import register_method
from pllbench.methods.proden import PRODEN


@register_method("oracle")
class Oracle(PRODEN):
    summary = "reference: the learner on the true labels (candidate source `oracle`, |S| = 1); never ranked"
    candidate_source = "oracle"
    reference = True
