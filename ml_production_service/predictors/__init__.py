"""Predictors: one interface, one implementation per kind of model."""
