"""The paper's analyses as pure functions from xarray objects to xarray objects; no model is loaded."""
