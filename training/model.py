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


def widen(source: keras.Model, target: keras.Model) -> None:
    """Start ``target``, built wider than ``source`` by :func:`build_model` with the same number of
    stages, from ``source``'s weights so that it computes the same scores.

    Why: a wider network trained from scratch starts over, at 1.7 times the cost per epoch here; growing the
    shipped model keeps what its training learned and spends the new epochs on the new capacity.
    Old channels keep their weights, new filters keep ``target``'s random initialisation, and every
    weight by which an old unit reads a new channel is zero, so the new channels start silent and
    training gives them a role (the zero-padding form of Net2WiderNet). Raises ValueError when a
    layer of ``source`` is missing or does not fit.
    """
    stored = {layer.name: layer.get_weights() for layer in source.layers if layer.get_weights()}
    grown = [layer for layer in target.layers if layer.get_weights()]
    if sorted(stored) != sorted(layer.name for layer in grown):
        raise ValueError(f"layers differ: {sorted(set(stored) ^ {layer.name for layer in grown})}")
    old_channels, new_channels = (_last_conv_width(model) for model in (source, target))
    for layer in grown:
        old, new = stored[layer.name], layer.get_weights()
        if any(o.ndim != n.ndim or any(a > b for a, b in zip(o.shape, n.shape)) for o, n in zip(old, new)):
            shapes = ", ".join(f"{o.shape} -> {n.shape}" for o, n in zip(old, new))
            raise ValueError(f"layer {layer.name}: {shapes} does not fit")
        flat = layer.name == "head_dense"
        if flat:  # the head reads the flattened last feature map: rows are (position, channel) pairs
            positions = old[0].shape[0] // old_channels
            old[0] = old[0].reshape(positions, old_channels, -1)
            new[0] = new[0].reshape(positions, new_channels, -1)
        for o, n in zip(old, new):
            n[tuple(slice(0, size) for size in o.shape)] = o
        if isinstance(layer, (layers.Conv2D, layers.Dense)):
            # kernels are (..., inputs, outputs): old outputs must not read the new inputs
            new[0][..., old[0].shape[-2] :, : old[0].shape[-1]] = 0.0
        if flat:
            new[0] = new[0].reshape(-1, new[0].shape[-1])
        layer.set_weights(new)


def _last_conv_width(model: keras.Model) -> int:
    return [layer for layer in model.layers if isinstance(layer, layers.Conv2D)][-1].filters
