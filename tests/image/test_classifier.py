"""The shipped held-out classifier that judges image samples and defines the domain FID."""

import pytest
import torch

from mmaccel.data.scenes import NUM_CLASSES, make_dataset
from mmaccel.eval.fid import FeatureExtractor, frechet_distance
from mmaccel.image.classifier import ShapeClassifier
from mmaccel.image.pipeline import DEFAULT_WEIGHTS


@pytest.fixture(scope="module")
def classifier():
    return ShapeClassifier.from_pretrained(DEFAULT_WEIGHTS / "classifier.safetensors")


def test_shipped_classifier_recognises_unseen_generator_images(classifier):
    images, labels = make_dataset(200, seed=9_000_001)
    accuracy = (classifier.predict(images) == torch.from_numpy(labels)).float().mean()
    assert accuracy >= 0.95
    assert classifier.config.num_classes == NUM_CLASSES


def test_domain_fid_separates_real_from_shuffled_pixels(classifier):
    a, _ = make_dataset(120, seed=9_000_002)
    b, _ = make_dataset(120, seed=9_000_003)
    extractor = FeatureExtractor(classifier, classifier.config.feature_dim)
    real_a = torch.from_numpy(a).permute(0, 3, 1, 2).contiguous()
    real_b = torch.from_numpy(b).permute(0, 3, 1, 2).contiguous()
    noise = real_b.flatten(1)[:, torch.randperm(real_b[0].numel())].view_as(real_b)
    same = frechet_distance(extractor, real_a, real_b)
    broken = frechet_distance(extractor, real_a, noise)
    assert broken > 5 * same


def test_wrong_image_shape_is_rejected(classifier):
    with pytest.raises(ValueError, match="images"):
        classifier.predict(torch.zeros(2, 64, 64))
