"""The emotion CNN: plain 3x3 convolutions, batch norm and ReLU, shaped for int8 on a Pi's CPU.

Why this shape: Conv+BN+ReLU fold into one int8 convolution in TFLite and ReLU keeps activations
in a range int8 represents well; max-pooling and a small dense head quantise without loss, unlike
swish/GELU or depthwise stacks. Faces are aligned by the detector, so the head flattens the 3x3
feature map instead of pooling it away: where a feature sits (mouth, brows) matters.
"""

from __future__ import annotations

import keras
from keras import layers

from edge.emotions import EMOTIONS, FACE_SIZE


def build_model(
    widths: tuple[int, ...] = (32, 64, 128, 256),
    dense: int = 256,
    dropout: float = 0.4,
    input_size: int = FACE_SIZE,
) -> keras.Model:
    """Input: gray faces scaled to [0, 1], shape (N, size, size, 1); output: softmax over EMOTIONS."""
    inputs = keras.Input((input_size, input_size, 1), name="face")
    x = inputs
    for stage, width in enumerate(widths, start=1):
        for conv in (1, 2):
            x = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"s{stage}_conv{conv}")(x)
            x = layers.BatchNormalization(name=f"s{stage}_bn{conv}")(x)
            x = layers.ReLU(name=f"s{stage}_relu{conv}")(x)
        x = layers.MaxPooling2D(name=f"s{stage}_pool")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dropout(dropout, name="head_drop1")(x)
    x = layers.Dense(dense, use_bias=False, name="head_dense")(x)
    x = layers.BatchNormalization(name="head_bn")(x)
    x = layers.ReLU(name="head_relu")(x)
    x = layers.Dropout(dropout, name="head_drop2")(x)
    x = layers.Dense(len(EMOTIONS), name="logits")(x)
    outputs = layers.Softmax(name="scores")(x)
    return keras.Model(inputs, outputs, name="emotion_cnn")
