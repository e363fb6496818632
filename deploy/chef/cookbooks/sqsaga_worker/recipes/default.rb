#
# Cookbook:: sqsaga_worker
# Recipe:: default
#
# Installs one sqsaga worker on an EC2 node: a system user, the pinned
# binary, /etc/sqsaga/config.json and a hardened systemd unit, restarted
# whenever one of them changes.
#
# Differences from the seed's recipe, each a fault it had:
# - no compiler on the node: the release binary is downloaded, with a
#   SHA-256 checksum, so every node runs the same bytes;
# - a missing data bag item fails the Chef run with its name, instead of a
#   silent `return` that left the node half-configured and "converged";
# - the binary and the config belong to root (the service user cannot
#   rewrite them) and the config, which holds the signing key, is not
#   world-readable and never printed in Chef's logs;
# - the config is checked by the binary itself before it replaces the
#   running one;
# - the unit gives the worker time to drain on stop, and is sandboxed.

require 'json'

sqsaga = node['sqsaga']
service_name = sqsaga['service'].to_s
unless service_name.match?(/\A[a-z][a-z0-9_-]*\z/)
  raise "sqsaga_worker: node['sqsaga']['service'] must name a participant service (inventory, payment, notification), got #{service_name.inspect}"
end

sha256 = sqsaga['binary_sha256'].to_s.downcase
unless sha256.match?(/\A[0-9a-f]{64}\z/)
  raise "sqsaga_worker: node['sqsaga']['binary_sha256'] must be the SHA-256 (64 hex digits) of the sqsaga #{sqsaga['version']} binary, got #{sqsaga['binary_sha256'].inspect}"
end

region = sqsaga['region']
if region.nil? && node['ec2']
  region = node['ec2']['region'] || node['ec2']['placement_availability_zone'].to_s.chop
end
if region.nil? || region.empty?
  raise "sqsaga_worker: no AWS region: set node['sqsaga']['region'] (this node has no EC2 metadata)"
end

user_name = sqsaga['user']
group_name = sqsaga['group']
install_dir = sqsaga['install_dir']
bin_dir = "#{install_dir}/bin"
binary_path = "#{bin_dir}/sqsaga"
config_dir = sqsaga['config_dir']
config_path = "#{config_dir}/config.json"
data_dir = sqsaga['data_dir']
unit_name = "sqsaga-#{service_name}"
drain_seconds = Integer(sqsaga['drain_timeout_seconds'])
# systemd's stop budget: drain + longest step timeout (10s) + margin (see attributes).
timeout_stop_sec = drain_seconds + Integer(sqsaga['stop_margin_seconds'])
binary_url = sqsaga['binary_url'] ||
             "#{sqsaga['base_url']}/#{sqsaga['version']}/sqsaga-#{node['kernel']['machine']}-linux"

# Queue URLs (and the signing key) for this service, from the data bag item
# sqsaga/<service>; encrypted in production.
bag = sqsaga['data_bag']
item =
  begin
    if sqsaga['data_bag_encrypted']
      secret = Chef::EncryptedDataBagItem.load_secret(sqsaga['data_bag_secret_path'])
      data_bag_item(bag, service_name, secret)
    else
      data_bag_item(bag, service_name)
    end
  rescue StandardError => e
    raise "sqsaga_worker: cannot load data bag item #{bag}/#{service_name} " \
          "(encrypted: #{sqsaga['data_bag_encrypted']}): #{e.class}: #{e.message}. " \
          'It must hold queue_url, dlq_url and orchestrator_queue_url for this service; ' \
          'the worker is not installed without them.'
  end

missing = %w(queue_url dlq_url orchestrator_queue_url).reject { |k| item[k].is_a?(String) && !item[k].empty? }
unless missing.empty?
  raise "sqsaga_worker: data bag item #{bag}/#{service_name} lacks #{missing.join(', ')}"
end

# The binary's JSON configuration (the same keys as the SQSAGA_* variables of
# the Kubernetes deployment). Unset optional values are left out.
config = {
  'service' => service_name,
  'backend' => sqsaga['backend'],
  'queue_url' => item['queue_url'],
  'dlq_url' => item['dlq_url'],
  'orchestrator_queue_url' => item['orchestrator_queue_url'],
  'queue_prefix' => item['queue_prefix'],
  'region' => region,
  'log_level' => sqsaga['log_level'],
  'data_dir' => data_dir,
  'http_addr' => sqsaga['http_addr'],
  'concurrency' => Integer(sqsaga['concurrency']),
  'visibility_timeout' => sqsaga['visibility_timeout'],
  'wait_time' => sqsaga['wait_time'],
  'drain_timeout' => "#{drain_seconds}s",
  'heartbeat_interval' => sqsaga['heartbeat_interval'],
  'signing_key' => item['signing_key'],
  'signing_key_previous' => item['signing_key_previous'],
  'require_signature' => sqsaga['require_signature'] ? true : false,
  'otlp_endpoint' => sqsaga['otlp_endpoint'],
}.reject { |_k, v| v.nil? || v == '' }

group group_name do
  system true
end

user user_name do
  gid group_name
  system true
  shell '/usr/sbin/nologin'
  home data_dir
  manage_home false
end

directory install_dir do
  owner 'root'
  group 'root'
  mode '0755'
end

directory bin_dir do
  owner 'root'
  group 'root'
  mode '0755'
end

directory config_dir do
  owner 'root'
  group group_name
  mode '0750'
end

directory data_dir do
  owner user_name
  group group_name
  mode '0750'
end

# The binary first: the config template below runs it to check the config.
remote_file binary_path do
  source binary_url
  checksum sha256
  owner 'root'
  group 'root'
  mode '0755'
  backup false
  notifies :restart, "service[#{unit_name}]", :delayed
end

template config_path do
  source 'config.json.erb'
  owner 'root'
  group group_name
  mode '0640'
  # Holds the signing key: keep it out of Chef's output and diffs.
  sensitive true
  variables(config: config)
  # The new file replaces the old one only if the binary accepts it.
  verify "#{binary_path} config check --config %{path}"
  notifies :restart, "service[#{unit_name}]", :delayed
end

template "/etc/systemd/system/#{unit_name}.service" do
  source 'sqsaga.service.erb'
  owner 'root'
  group 'root'
  mode '0644'
  variables(
    service: service_name,
    user: user_name,
    group: group_name,
    exec_path: binary_path,
    config_path: config_path,
    data_dir: data_dir,
    timeout_stop_sec: timeout_stop_sec
  )
  notifies :run, 'execute[systemctl daemon-reload]', :immediately
  notifies :restart, "service[#{unit_name}]", :delayed
end

execute 'systemctl daemon-reload' do
  command 'systemctl daemon-reload'
  action :nothing
end

service unit_name do
  action [:enable, :start]
end
