"""ec2net: configure EC2 Elastic Network Interfaces from the instance metadata service."""

__version__ = "2.0.0"
