"""Files the image build writes into the guest (kept apart to keep image.py short).

Their content is part of the variant cache key: image.py hashes this file's source.
"""

from __future__ import annotations

AGENT_PORT_NAME = "systest.agent"
AGENT_GUEST_PATH = "/usr/local/lib/systest/agent_guest.py"
GUEST_TOOLS_PATH = "/usr/local/lib/systest/guest_tools.py"
# ec2sim's probes connect to this port on every address of the instance.
ECHO_PORT = 7007
# The harness always puts the primary NIC in PCI slot 5, so it is named ens5 as on Nitro.
PRIMARY_IFNAME = "ens5"


NETWORKD_PRIMARY = f"""\
# What an AMI ships for its primary NIC: DHCP on the first interface only. Hot-plugged
# NICs (ens6, ...) are left alone; configuring them is the job of the tool under test.
[Match]
Name={PRIMARY_IFNAME} eth0

[Network]
DHCP=yes

[DHCPv4]
# as EC2's images do: the VPC's MTU (9001) comes with the lease (option 26)
UseMTU=yes
"""

NM_PRIMARY = f"""\
[connection]
id=primary
type=ethernet
interface-name={PRIMARY_IFNAME}
autoconnect=true

[ipv4]
method=auto

[ipv6]
method=auto
may-fail=true
"""

# Without this NetworkManager would auto-activate "Wired connection N" on every new NIC
# and hide whatever the tool under test does.
NM_CONF = """\
[main]
no-auto-default=*
"""

AGENT_UDEV_RULE = f"""\
SUBSYSTEM=="virtio-ports", ATTR{{name}}=="{AGENT_PORT_NAME}", TAG+="systemd", \
ENV{{SYSTEMD_WANTS}}+="systest-agent.service"
"""

AGENT_UNIT = f"""\
[Unit]
Description=System-test agent on virtio-serial port {AGENT_PORT_NAME}
DefaultDependencies=no
BindsTo=dev-virtio\\x2dports-{AGENT_PORT_NAME}.device
After=dev-virtio\\x2dports-{AGENT_PORT_NAME}.device

[Service]
ExecStart=/usr/bin/python3 {AGENT_GUEST_PATH} /dev/virtio-ports/{AGENT_PORT_NAME}
Restart=always
RestartSec=1

[Install]
WantedBy=sysinit.target
"""

# `-cpu max` advertises SVM/VMX: without this the guest loads kvm modules it never uses.
MODPROBE_BLACKLIST = """\
blacklist kvm
blacklist kvm_amd
blacklist kvm_intel
"""

JOURNALD_CONF = """\
[Journal]
# Keep the journal in RAM: less disk work under TCG, and the root is a snapshot anyway.
Storage=volatile
"""

# The fabric proves reachability by real TCP to every address: the guest's side of that.
ECHO_UNIT = f"""\
[Unit]
Description=System-test TCP echo on port {ECHO_PORT}, every address

[Service]
ExecStart=/usr/bin/python3 {GUEST_TOOLS_PATH} echo {ECHO_PORT}
Restart=always
RestartSec=1

[Install]
WantedBy=multi-user.target
"""

# The AWS tool's udev rule and networkd base file match ENA/ixgbevf/Xen only; the
# guest's NICs are virtio_net. These are the only edits made to its package.
AWS_DRIVER_EDITS = (
    (
        "usr/lib/udev/rules.d/99-vpc-policy-routes.rules",
        "vif|ena|ixgbevf",
        "vif|ena|ixgbevf|virtio_net",
    ),
    (
        "usr/lib/systemd/network/80-ec2.network",
        "Driver=ena ixgbevf vif",
        "Driver=ena ixgbevf vif virtio_net",
    ),
)
