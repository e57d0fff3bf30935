"""The sandbox Asterisk: a debootstrap chroot image shared by any number of instances.

``image`` builds the image, ``instance`` renders an instance's configuration from
``templates/`` and runs Asterisk, ``ami`` is a minimal AMI client for boot and test
events, ``ports`` claims free ports, ``commands`` is ``fastagi sandbox ...``.
"""

from fastagi.sandbox import commands
from fastagi.sandbox.ami import AmiClient, AmiError
from fastagi.sandbox.image import ImageError, build_image, default_rootfs
from fastagi.sandbox.instance import Sandbox, SandboxError, SandboxPorts, running_sandbox
from fastagi.sandbox.ports import PortClaim, claim_sandbox_ports

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
