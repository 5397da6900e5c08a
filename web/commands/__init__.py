"""Subcommands of ``qizhi``, one module per concern; web.cli assembles them."""
