# Attributes of the sqsaga_worker cookbook. The same binary and the same
# configuration keys as the container image (deploy/k8s): a node converged by
# Chef and a pod rolled out by Flux must produce the same worker fingerprint.

# Which participant this node runs: inventory, payment or notification.
# It selects the data bag item (sqsaga/<service>) and the systemd unit name.
default['sqsaga']['service'] = 'inventory'

# The release to install. binary_sha256 must be set (role, environment or
# policyfile) to the SHA-256 of that release's binary: the recipe refuses to
# install an unpinned binary, and the worker reports this hash in its
# fingerprint, so two nodes with the same attribute run the same bytes.
default['sqsaga']['version'] = '0.1.0'
default['sqsaga']['binary_url'] = nil # default: "#{base_url}/#{version}/sqsaga-x86_64-linux"
default['sqsaga']['base_url'] = 'https://artifacts.example.invalid/sqsaga'
default['sqsaga']['binary_sha256'] = nil

# Layout. The binary and its config are owned by root: the service user can
# read them but not change them (no self-modifying drift).
default['sqsaga']['user'] = 'sqsaga'
default['sqsaga']['group'] = 'sqsaga'
default['sqsaga']['install_dir'] = '/opt/sqsaga'
default['sqsaga']['config_dir'] = '/etc/sqsaga'
default['sqsaga']['data_dir'] = '/var/lib/sqsaga'

# Queue URLs (and the signing key) come from the data bag item
# sqsaga/<service>. In production the data bag is encrypted: set
# data_bag_encrypted to true and put the shared secret at data_bag_secret_path.
default['sqsaga']['data_bag'] = 'sqsaga'
default['sqsaga']['data_bag_encrypted'] = false
default['sqsaga']['data_bag_secret_path'] = '/etc/chef/encrypted_data_bag_secret'

# Runtime settings, written to /etc/sqsaga/config.json (keys as the binary
# reads them; durations as strings).
default['sqsaga']['backend'] = 'aws'
default['sqsaga']['region'] = nil # default: the node's EC2 region (Ohai), else an error
default['sqsaga']['log_level'] = 'info'
default['sqsaga']['http_addr'] = '127.0.0.1:8080'
default['sqsaga']['concurrency'] = 2 # pollers, each taking up to 10 messages
default['sqsaga']['visibility_timeout'] = '60s'
default['sqsaga']['wait_time'] = '20s'
default['sqsaga']['heartbeat_interval'] = '15s'
default['sqsaga']['require_signature'] = true
default['sqsaga']['otlp_endpoint'] = nil

# Graceful stop: after SIGTERM the worker stops receiving and finishes its
# in-flight steps within drain_timeout_seconds. systemd waits that long plus
# the longest step timeout (10s in create_order.yaml) plus a margin before
# SIGKILL: TimeoutStopSec = drain 30 + stop margin 30 (the longest step, 10s,
# plus 20s) = 60.
default['sqsaga']['drain_timeout_seconds'] = 30
default['sqsaga']['stop_margin_seconds'] = 30
