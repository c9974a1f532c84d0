"""ec2net: configure EC2 Elastic Network Interfaces from the instance metadata service."""

__version__ = "0.1.0"
