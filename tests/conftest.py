import numpy as np
import pytest

import chemohost as ch
from chemohost.api import parameter_vector


def typical(model_name: str, species: str = "human", **overrides):
    model = ch.get_model(model_name)
    names, values, _ = parameter_vector(model, species, overrides)
    return model, names, values


def terminal_half_life(t, c):
    """Half-life from a log-linear least-squares fit."""
    slope = np.polyfit(t, np.log(c), 1)[0]
    return np.log(2) / -slope


@pytest.fixture
def tight():
    return ch.SolverOptions(rtol=1e-9, atol=1e-13)
