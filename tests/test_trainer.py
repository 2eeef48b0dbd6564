"""The chapter 6 Trainer: the book's schedule, printing, lists, optimizer names and reproducibility,
and a run whose training diverges finishing with one warning, as the book's does."""
import re
import warnings

import numpy as np
import pytest

from fastbp import Adam, MultiLayerNet, MultiLayerNetExtend, Trainer


def toy(n=300, d=10, c=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    return x, np.argmax(x @ rng.standard_normal((d, c)), axis=1)


X_ALL, T_ALL = toy(n=400)
X, T, XT, TT = X_ALL[:300], T_ALL[:300], X_ALL[300:], T_ALL[300:]


def net(seed=0, **kwargs):
    np.random.seed(seed)
    return MultiLayerNet(10, [16, 16], 3, **kwargs)


def test_schedule_printing_and_lists(capsys):
    trainer = Trainer(net(), X, T, XT, TT, epochs=4, mini_batch_size=100)
    assert trainer.iter_per_epoch == 3.0 and trainer.max_iter == 12 and trainer.batch_size == 100
    trainer.train()
    lines = capsys.readouterr().out.splitlines()
    assert len(trainer.train_loss_list) == 12
    assert len(trainer.train_acc_list) == len(trainer.test_acc_list) == 4   # steps 0, 3, 6, 9
    assert trainer.current_iter == 12 and trainer.current_epoch == 4
    assert lines[0] == f"train loss:{trainer.train_loss_list[0]}"
    epoch_lines = [line for line in lines if line.startswith("=== epoch:")]
    assert epoch_lines[0] == (f"=== epoch:1, train acc:{trainer.train_acc_list[0]}, "
                              f"test acc:{trainer.test_acc_list[0]} ===")
    assert lines.index(epoch_lines[1]) == 5     # after the losses of steps 0..3 and epoch 1's line
    assert lines[-2] == "=============== Final Test Accuracy ==============="
    assert re.fullmatch(r"test acc:0\.\d+", lines[-1])
    assert len(lines) == 12 + 4 + 2


def test_uneven_epochs_follow_the_books_float_schedule():
    trainer = Trainer(net(), X[:250], T[:250], XT, TT, epochs=2, mini_batch_size=100, verbose=False)
    assert trainer.iter_per_epoch == 2.5 and trainer.max_iter == 5
    trainer.train()
    assert len(trainer.train_acc_list) == 1     # only step 0 is a multiple of 2.5 below 5


def test_same_seed_same_run_and_it_learns():
    runs = []
    for _ in range(2):
        trainer = Trainer(net(seed=3), X, T, XT, TT, epochs=10, mini_batch_size=30, optimizer="Adam",
                          optimizer_param={"lr": 0.01}, verbose=False)
        np.random.seed(4)
        trainer.train()
        runs.append((trainer.train_loss_list, trainer.test_acc_list))
    assert runs[0] == runs[1]
    assert runs[0][1][-1] > 0.8 and runs[0][0][-1] < runs[0][0][0]


@pytest.mark.parametrize("name, cls", [("sgd", "SGD"), ("Momentum", "Momentum"), ("NESTEROV", "Nesterov"),
                                       ("AdaGrad", "AdaGrad"), ("rmsprop", "RMSprop"), ("rmsprpo", "RMSprop"),
                                       ("adam", "Adam")])
def test_the_books_optimizer_names(name, cls):
    trainer = Trainer(net(), X, T, XT, TT, epochs=1, optimizer=name, optimizer_param={"lr": 0.001},
                      verbose=False)
    assert type(trainer.optimizer).__name__ == cls and trainer.optimizer.lr == 0.001
    assert Trainer(net(), X, T, XT, TT, verbose=False).optimizer.lr == 0.01   # the book's default


def test_an_optimizer_object_and_evaluation_samples():
    opt = Adam(lr=0.005)
    trainer = Trainer(net(), X, T, XT, TT, epochs=1, optimizer=opt, evaluate_sample_num_per_epoch=7,
                      verbose=False)
    assert trainer.optimizer is opt
    trainer.train()
    assert all(acc * 7 == round(acc * 7) for acc in trainer.train_acc_list + trainer.test_acc_list)
    assert opt.iter == trainer.max_iter


def test_extend_net_with_dropout_and_batchnorm_trains():
    np.random.seed(5)
    network = MultiLayerNetExtend(10, [16, 16], 3, use_dropout=True, dropout_ration=0.1,
                                  use_batchnorm=True, weight_decay_lambda=1e-4)
    trainer = Trainer(network, X, T, XT, TT, epochs=15, mini_batch_size=50, optimizer="adam",
                      optimizer_param={"lr": 0.01}, verbose=False)
    trainer.train()
    assert trainer.test_acc_list[-1] > 0.8


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",
                            "ignore:invalid value encountered:RuntimeWarning")
def test_a_diverging_run_finishes_with_one_warning(capsys):
    """As the book's batch_norm_test.py: a bad weight scale and a large step blow the weights up;
    the book's run goes on (accuracy of NaN scores), so must this one."""
    trainer = Trainer(net(weight_init_std=10.0), X * 100, T, XT, TT, epochs=3, optimizer="sgd",
                      optimizer_param={"lr": 1e150}, verbose=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train()
    ours = [w for w in caught if "Computing on with NaN/Inf" in str(w.message)]
    assert len(ours) == 1 and issubclass(ours[0].category, RuntimeWarning)
    assert "MultiLayerNet: NaN or Inf in the output although the input x is finite" in str(ours[0].message)
    assert not np.isfinite(trainer.train_loss_list[-1])
    assert all(0 <= acc <= 1 for acc in trainer.train_acc_list)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(optimizer="adamw"), ValueError, r"optimizer: expected one of \['adagrad', 'adam', 'momentum', 'nesterov', 'rmsprop', 'sgd'\]"),
    (dict(optimizer_param={"lr": 0.1, "momentum": 0.9}), TypeError, r"optimizer_param: SGD takes lr, got \['lr', 'momentum'\]"),
    (dict(optimizer_param=[0.1]), TypeError, r"optimizer_param: expected a dict"),
    (dict(optimizer_param={"lr": -1}), ValueError, r"lr: expected a finite positive number, got -1"),
    (dict(epochs=0), ValueError, r"epochs: expected a positive number, got 0"),
    (dict(mini_batch_size=0), ValueError, r"mini_batch_size: expected a positive integer, got 0"),
    (dict(evaluate_sample_num_per_epoch=2.5), TypeError, r"evaluate_sample_num_per_epoch: expected a positive integer"),
    (dict(t_train=T[:10]), ValueError, r"x_train and t_train: expected one label per sample, got 300 samples and 10 labels"),
    (dict(x_test=[1, 2]), TypeError, r"x_test: expected a numpy array"),
    (dict(network="net"), TypeError, r"network: expected a net with params, gradient, loss and accuracy"),
])
def test_bad_arguments_are_refused_clearly(kwargs, error, match):
    args = dict(network=net(), x_train=X, t_train=T, x_test=XT, t_test=TT, verbose=False)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        Trainer(**args)
