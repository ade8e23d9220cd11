"""The core record of a fit: the estimates, their covariance and the optimizer record (`estimates`)."""
