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
from training.config import PRECISIONS


@keras.saving.register_keras_serializable(package="emotion_edge")
class FusedBatchNormalization(layers.BatchNormalization):
    """Keras' batch norm, with the batch's statistics and the normalisation in training computed by
    TensorFlow's fused kernel (FusedBatchNormV3) instead of Keras' separate moment and arithmetic ops.

    Why: on a CPU those separate ops cost more than the convolutions around them once these run in
    bfloat16 (docs/model.md measures it). Same weights in the same order as BatchNormalization, kept
    in float32 whatever the compute dtype, the same moving-average update and Keras' biased batch
    variance, so weights move between the two with set_weights; inference is Keras' own.
    """

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("autocast", False)  # the fused kernel takes float32 scale and offset
        super().__init__(**kwargs)

    def call(self, inputs, training=None, mask=None):
        if not (training and self.trainable) or mask is not None or self.renorm or self.axis != -1:
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        channels = inputs.shape[-1]
        x = inputs if len(inputs.shape) == 4 else tf.reshape(inputs, [-1, 1, 1, channels])
        none = tf.constant([], tf.float32)
        y, mean, variance, *_ = tf.raw_ops.FusedBatchNormV3(
            x=x, scale=self.gamma, offset=self.beta, mean=none, variance=none, epsilon=self.epsilon, is_training=True
        )
        n = tf.cast(tf.size(x) // channels, tf.float32)
        variance *= (n - 1.0) / tf.maximum(n, 2.0)  # the kernel's variance is Bessel-corrected; Keras' is not
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return tf.cast(tf.reshape(y, tf.shape(inputs)), self.compute_dtype)


def build_model(
    widths: tuple[int, ...] = (32, 64, 128, 256),
    dense: int = 256,
    dropout: float = 0.4,
    input_size: int = FACE_SIZE,
    *,
    precision: str | None = None,
) -> keras.Model:
    """Input: gray faces scaled to [0, 1], shape (N, size, size, 1); output: softmax over EMOTIONS.

    ``precision`` None: the model as saved and shipped, float32 with Keras' own layers, so loading it
    needs nothing of this package. One of PRECISIONS: the same network as training runs it, with
    FusedBatchNormalization and that dtype policy; :func:`plain_copy` turns it into the saved form.
    """
    dtype = PRECISIONS[precision] if precision else "float32"
    norm = FusedBatchNormalization if precision else layers.BatchNormalization
    inputs = keras.Input((input_size, input_size, 1), name="face")
    x = inputs
    for stage, width in enumerate(widths, start=1):
        for conv in (1, 2):
            x = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"s{stage}_conv{conv}", dtype=dtype)(x)
            x = norm(name=f"s{stage}_bn{conv}", dtype=dtype)(x)
            x = layers.ReLU(name=f"s{stage}_relu{conv}", dtype=dtype)(x)
        x = layers.MaxPooling2D(name=f"s{stage}_pool", dtype=dtype)(x)
    x = layers.Flatten(name="flatten", dtype=dtype)(x)
    x = layers.Dropout(dropout, name="head_drop1", dtype=dtype)(x)
    x = layers.Dense(dense, use_bias=False, name="head_dense", dtype=dtype)(x)
    x = norm(name="head_bn", dtype=dtype)(x)
    x = layers.ReLU(name="head_relu", dtype=dtype)(x)
    x = layers.Dropout(dropout, name="head_drop2", dtype=dtype)(x)
    x = layers.Dense(len(EMOTIONS), name="logits", dtype=dtype)(x)
    outputs = layers.Softmax(name="scores", dtype="float32")(x)  # scores and the loss stay float32
    return keras.Model(inputs, outputs, name="emotion_cnn")


def plain_copy(model: keras.Model) -> keras.Model:
    """``model``'s weights in the saved form of its network (``build_model`` without a precision)."""
    convs = [layer for layer in model.layers if isinstance(layer, layers.Conv2D)]
    copy = build_model(
        tuple(conv.filters for conv in convs[::2]),
        model.get_layer("head_dense").units,
        model.get_layer("head_drop1").rate,
        model.input_shape[1],
    )
    copy.set_weights(model.get_weights())
    return copy


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
