"""Sample-quality metrics: FID and KID in a pluggable feature space, plus classifier-based
checks (accuracy on conditional samples, entropy of the predicted-class histogram)."""
from ganx.metrics.distances import fid_from_features, frechet_distance, kid_from_features, unit_rms_scale  # noqa: F401
from ganx.metrics.features import (  # noqa: F401
    DigitsClassifier,
    FeatureExtractor,
    InceptionFeatures,
    ClassifierFeatures,
    class_entropy,
    load_or_train_classifier,
    train_classifier,
)
from ganx.metrics.evaluate import evaluate_generator, format_metrics  # noqa: F401
