"""fastbp: backpropagation as taught in chapter 5 of "Deep Learning from Scratch", made fast.

The book's layers and nets with the same names and methods; the hot paths are Numba kernels
(``fastbp.kernels``), each proven equal to a plain NumPy twin (``fastbp.reference``) and to the
numerical gradient by the test suite.
"""
from .backend import TWINS, get_backend, set_backend, use_backend
from .datasets import DatasetNotFoundError, load_digits, load_fashion_mnist, load_mnist
from .functions import (cross_entropy_error, identity_function, relu, relu_grad, sigmoid,
                        sigmoid_grad, softmax, softmax_loss, step_function, sum_squared_error)
from . import graph  # fastbp.graph.record(): the computational graph with its numbers
from .gradcheck import GradCheck, gradient_check, numerical_gradient
from .layers import AddLayer, Affine, MulLayer, Relu, Sigmoid, SoftmaxWithLoss, Tanh
from .losses import get_loss, set_loss, use_loss
from .nets import MultiLayerNet, MultiLayerNetExtend, TwoLayerNet
from .optimizers import SGD, AdaGrad, Adam, Momentum, Nesterov, RMSprop
from .regularization import BatchNormalization, Dropout
from .threads import blas_threads, get_threads, set_blas_threads, set_threads
from .trainer import Trainer
from .training import (EpochRow, History, TrainingDiverged, TrainingInterrupted, TrainingWarning,
                       fit)
from .util import shuffle_dataset, smooth_curve

__version__ = "0.1.0"

__all__ = [
    "MulLayer", "AddLayer", "Relu", "Sigmoid", "Tanh", "Affine", "SoftmaxWithLoss",
    "Dropout", "BatchNormalization",
    "TwoLayerNet", "MultiLayerNet", "MultiLayerNetExtend",
    "SGD", "Momentum", "Nesterov", "AdaGrad", "RMSprop", "Adam",
    "numerical_gradient", "gradient_check", "GradCheck",
    "identity_function", "step_function", "sigmoid", "sigmoid_grad", "relu", "relu_grad",
    "softmax", "sum_squared_error", "cross_entropy_error", "softmax_loss",
    "smooth_curve", "shuffle_dataset",
    "Trainer", "fit", "History", "EpochRow", "TrainingDiverged", "TrainingInterrupted",
    "TrainingWarning",
    "load_mnist", "load_fashion_mnist", "load_digits", "DatasetNotFoundError",
    "set_loss", "get_loss", "use_loss",
    "use_backend", "set_backend", "get_backend", "TWINS", "blas_threads", "set_blas_threads",
    "get_threads", "set_threads",
]
