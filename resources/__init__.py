"""Bundled data of CASA Studio: demo inputs, icons, the desktop entry (no code).

Installed, this folder is the package ``casa_core.bundled`` (see setup.py); ``casa_core.resources``
says where it is in every setting.
"""
