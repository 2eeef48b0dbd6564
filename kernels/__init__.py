"""fastbp's compiled kernels (installed as ``fastbp.kernels``).

Every public function here has a NumPy twin of the same name and signature in
``fastbp.reference``. Kernels trust their input: call them through fastbp's layers, nets and
``fit``, which validate first; a kernel fed bad indices reads out of bounds.
"""
from .activations import (relu_backward, relu_forward, sigmoid_backward, sigmoid_forward,
                          tanh_backward, tanh_forward)
from .affine import affine_backward, affine_backward_params, affine_forward
from .batchnorm import batchnorm_backward, batchnorm_forward, batchnorm_forward_inference
from .dropout import dropout_backward, dropout_forward
from .net import (index_labels, net_gradient, net_labels, net_loss, net_numerical_gradient,
                  net_scores, onehot_labels)
from .optimizers import (adagrad_update, adam_update, momentum_update, nesterov_update,
                         rmsprop_update, sgd_update)
from .softmax_ce import (softmax_cross_entropy, softmax_cross_entropy_backward,
                         softmax_cross_entropy_onehot, softmax_cross_entropy_onehot_backward)
from .sparse import compress_rows, csr_affine_backward_params, csr_affine_forward
from .step import predict_labels, predict_labels_csr, sgd_steps, sgd_steps_csr

__all__ = [
    "affine_forward", "affine_backward", "affine_backward_params",
    "relu_forward", "relu_backward",
    "sigmoid_forward", "sigmoid_backward",
    "tanh_forward", "tanh_backward",
    "softmax_cross_entropy", "softmax_cross_entropy_backward",
    "softmax_cross_entropy_onehot", "softmax_cross_entropy_onehot_backward",
    "predict_labels", "sgd_steps",
    "compress_rows", "csr_affine_forward", "csr_affine_backward_params",
    "predict_labels_csr", "sgd_steps_csr",
    "index_labels", "onehot_labels", "net_scores", "net_loss", "net_gradient",
    "net_numerical_gradient", "net_labels",
    "sgd_update", "momentum_update", "nesterov_update", "adagrad_update", "rmsprop_update",
    "adam_update",
    "dropout_forward", "dropout_backward",
    "batchnorm_forward", "batchnorm_forward_inference", "batchnorm_backward",
]
