"""The sandbox Asterisk: a debootstrap chroot image shared by any number of instances.

``image`` builds the image, ``instance`` renders an instance's configuration from
``templates/`` and runs Asterisk, ``ami`` is a minimal AMI client for boot and test
events, ``ports`` claims free ports, ``commands`` is ``python -m fastagi_dev sandbox ...``.
"""

from fastagi_dev.sandbox import commands
from fastagi_dev.sandbox.ami import AmiClient, AmiError
from fastagi_dev.sandbox.image import ImageError, build_image, default_rootfs
from fastagi_dev.sandbox.instance import Sandbox, SandboxError, SandboxPorts, running_sandbox
from fastagi_dev.sandbox.ports import PortClaim, claim_sandbox_ports

__all__ = [
    "AmiClient",
    "AmiError",
    "ImageError",
    "PortClaim",
    "Sandbox",
    "SandboxError",
    "SandboxPorts",
    "build_image",
    "claim_sandbox_ports",
    "commands",
    "default_rootfs",
    "running_sandbox",
]
