"""The emotion CNN: plain 3x3 convolutions, batch norm and ReLU, shaped for int8 on a Pi's CPU.

Why this shape: Conv+BN+ReLU fold into one int8 convolution in TFLite and ReLU keeps activations
in a range int8 represents well; max-pooling and a small dense head quantise without loss, unlike
swish/GELU or depthwise stacks. Faces are aligned by the detector, so the head flattens the 3x3
feature map instead of pooling it away: where a feature sits (mouth, brows) matters.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from edge.vision.emotions import EMOTIONS, FACE_SIZE


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


def resize(source: keras.Model, target: keras.Model) -> None:
    """Start ``target``, built by :func:`build_model` with the same number of stages as ``source`` but
    other widths, from ``source``'s weights.

    Why: training a network of another width from scratch starts over; starting from a trained one
    keeps what its training learned and spends the new epochs on the difference.
    Where ``target`` is wider, old channels keep their weights, new filters keep ``target``'s random
    initialisation, and every weight by which an old unit reads a new channel is zero, so the network
    starts out computing the same scores (the zero-padding form of Net2WiderNet).
    Where it is narrower, each layer keeps the channels its batch norm scales most (network slimming's
    criterion, |gamma| / sqrt(variance)), so the pruned network starts close to the trained one and
    fine-tuning recovers the rest: the way to fit a wide network into a smaller time budget.
    Raises ValueError when a layer of ``source`` is missing or has another rank.
    """
    stored = {layer.name: layer.get_weights() for layer in source.layers if layer.get_weights()}
    targets = {layer.name: layer for layer in target.layers if layer.get_weights()}
    if sorted(stored) != sorted(targets):
        raise ValueError(f"layers differ: {sorted(set(stored) ^ set(targets))}")
    for producer, norm, consumer in _channel_groups(source):
        kept = targets[producer].get_weights()[0].shape[-1]
        if kept < stored[producer][0].shape[-1]:
            _strongest_first(stored, producer, norm, consumer)
    old_channels, new_channels = (_last_conv_width(model) for model in (source, target))
    for name, layer in targets.items():
        old, new = stored[name], layer.get_weights()
        if any(o.ndim != n.ndim for o, n in zip(old, new)):
            shapes = ", ".join(f"{o.shape} -> {n.shape}" for o, n in zip(old, new))
            raise ValueError(f"layer {name}: {shapes} does not fit")
        flat = name == "head_dense"
        if flat:  # the head reads the flattened last feature map: rows are (position, channel) pairs
            old[0] = _by_position(old[0], old_channels)
            new[0] = _by_position(new[0], new_channels)
        for o, n in zip(old, new):
            common = tuple(slice(0, min(a, b)) for a, b in zip(o.shape, n.shape))
            n[common] = o[common]
        if isinstance(layer, (layers.Conv2D, layers.Dense)):
            # kernels are (..., inputs, outputs): old outputs must not read the new inputs
            new[0][..., old[0].shape[-2] :, : old[0].shape[-1]] = 0.0
        if flat:
            new[0] = new[0].reshape(-1, new[0].shape[-1])
        layer.set_weights(new)


def _channel_groups(model: keras.Model) -> list[tuple[str, str, str]]:
    """(layer making channels, batch norm scaling them, layer reading them), in network order."""
    convs = [layer.name for layer in model.layers if isinstance(layer, layers.Conv2D)]
    producers = [*convs, "head_dense"]
    consumers = [*convs[1:], "head_dense", "logits"]
    return [(p, p.replace("conv", "bn").replace("dense", "bn"), c) for p, c in zip(producers, consumers)]


def _strongest_first(stored: dict, producer: str, norm: str, consumer: str) -> None:
    """Reorder one layer's channels, strongest first, in every weight that holds them: the scores stay
    the same and the strongest channels are the leading ones :func:`resize` keeps."""
    gamma, _, _, variance = stored[norm]
    order = np.argsort(-np.abs(gamma) / np.sqrt(variance + 1e-3), kind="stable")  # 1e-3: Keras' epsilon
    stored[producer][0] = stored[producer][0][..., order]
    stored[norm] = [w[order] for w in stored[norm]]
    kernel = stored[consumer][0]
    if consumer == "head_dense":
        stored[consumer][0] = _by_position(kernel, len(order))[:, order].reshape(kernel.shape)
    else:
        stored[consumer][0] = kernel[..., order, :]


def _by_position(kernel: np.ndarray, channels: int) -> np.ndarray:
    return kernel.reshape(kernel.shape[0] // channels, channels, -1)


def _last_conv_width(model: keras.Model) -> int:
    return [layer for layer in model.layers if isinstance(layer, layers.Conv2D)][-1].filters
