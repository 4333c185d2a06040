"""The Django admin: platform operators set up tenants and mappings, press "sync now"
and read the history. Django's model permissions decide what each may see and do
(`is_staff` only lets them log in). One module per concern; importing this package
registers them all."""

from . import customers, mappings, runs, tenants  # noqa: F401
