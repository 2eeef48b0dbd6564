# Seed 002, section 7.4, unchanged apart from the import lines (MNIST cannot be downloaded on the
# CI machines, so Fashion-MNIST, the same format and shapes, stands in for it).
import numpy as np
from fastbp import TwoLayerNet
from fastbp import load_fashion_mnist as load_mnist

# ��터 �기
(x_train, t_train), (x_test, t_test) = load_mnist(normalize=True, one_hot_label=True)

network = TwoLayerNet(input_size=784, hidden_size=50, output_size=10)

# 하���파�미터
iters_num = 10000 # 반복 횟수
train_size = x_train.shape[0]
batch_size = 100 # 미니배치 ��기
learning_rate = 0.1

train_loss_list = []
train_acc_list = []
test_acc_list = []

# �� 횟수
iter_per_epoch = max(train_size / batch_size, 1)

for i in range(iters_num):
    # 미니배치만�� batch 할당
    batch_mask = np.random.choice(train_size, batch_size)
    x_batch = x_train[batch_mask]
    t_batch = t_train[batch_mask]
    
    # 기울기 계산
    #grad = network.numerical_gradient(x_batch, t_batch) # 수치 미분 방�
    grad = network.gradient(x_batch, t_batch) # 오차�전파법 방�(훨씬 빠르다)
    
    # 갱신
    for key in ('W1', 'b1', 'W2', 'b2'):
        network.params[key] -= learning_rate * grad[key]
    
    # 학습 경과 기�
    loss = network.loss(x_batch, t_batch)
    train_loss_list.append(loss)
    
    # 1��당 정확� 계산 , 훈련��터 모� 봤� 때.
    if i % iter_per_epoch == 0:
        train_acc = network.accuracy(x_train, t_train)
        test_acc = network.accuracy(x_test, t_test)
        train_acc_list.append(train_acc)
        test_acc_list.append(test_acc)
        print(train_acc, test_acc)
