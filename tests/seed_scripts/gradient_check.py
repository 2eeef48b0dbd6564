# Seed 002, section 7.3, unchanged apart from the import lines (MNIST cannot be downloaded on the
# CI machines, so Fashion-MNIST, the same format and shapes, stands in for it).
import numpy as np
from fastbp import TwoLayerNet
from fastbp import load_fashion_mnist as load_mnist

# ��터 �기
(x_train, t_train), (x_test, t_test) = load_mnist(normalize=True, one_hot_label=True)

network = TwoLayerNet(input_size=784, hidden_size=50, output_size=10)

# ��터 3개만 확�
x_batch = x_train[:3]
t_batch = t_train[:3]

# 수치 미분
grad_numerical = network.numerical_gradient(x_batch, t_batch)
# 오차�전파법
grad_backprop = network.gradient(x_batch, t_batch)

# � 가중치� 절대 오차� �균� 구한다.
for key in grad_numerical.keys():
    diff = np.average( np.abs(grad_backprop[key] - grad_numerical[key]))
    print(key + ":" + str(diff))
