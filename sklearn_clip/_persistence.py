"""What it takes to load the package's estimators with skops.

``skops.io.load`` refuses every type it does not trust by default. A fitted
sklearn-clip estimator holds only numpy arrays, Python scalars, lists,
dicts and strings besides itself (trained skorch nets are stored as their
weight arrays and rebuilt on load), so the only types to trust are the
package's own estimator classes, listed here.
"""

from ._attention_probe import AttentionProbeClassifier
from ._clip_adapter import CLIPAdapterClassifier
from ._featurizer import CLIPFeaturizer
from ._gda import GDAClassifier
from ._linear_probe import LinearProbeClassifier
from ._tip_adapter import TipAdapterClassifier
from ._visual_prompt import VisualPromptClassifier
from ._zero_shot import ZeroShotClassifier
from ._zero_shot_logits import ZeroShotLogits
from ._zs_linear_probe import ZSLinearProbeClassifier

#: Fully qualified names of the package's estimators, for
#: ``skops.io.load(path, trusted=SKOPS_TRUSTED_TYPES)``.
SKOPS_TRUSTED_TYPES = sorted(
    f"{cls.__module__}.{cls.__qualname__}"
    for cls in (
        AttentionProbeClassifier,
        CLIPAdapterClassifier,
        CLIPFeaturizer,
        GDAClassifier,
        LinearProbeClassifier,
        TipAdapterClassifier,
        VisualPromptClassifier,
        ZSLinearProbeClassifier,
        ZeroShotClassifier,
        ZeroShotLogits,
    )
)
