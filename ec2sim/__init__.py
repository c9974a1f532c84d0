"""ec2sim: a simulated EC2 world (VPC fabric in network namespaces + IMDS) for tests.

Test-only; not part of the installed ec2-net-utils package.
"""
