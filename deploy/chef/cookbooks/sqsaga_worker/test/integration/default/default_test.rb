# InSpec checks for the sqsaga_worker cookbook (run by `kitchen verify`).

service_name = input('service', value: 'inventory')
binary_sha256 = input('binary_sha256')
unit = "sqsaga-#{service_name}"

describe user('sqsaga') do
  it { should exist }
  its('shell') { should eq '/usr/sbin/nologin' }
end

# The pinned binary, owned by root: the service cannot replace it.
describe file('/opt/sqsaga/bin/sqsaga') do
  it { should be_file }
  it { should be_owned_by 'root' }
  its('mode') { should cmp '0755' }
  its('sha256sum') { should eq binary_sha256 }
end

# The config holds the signing key: root-owned, readable by the service group only.
describe file('/etc/sqsaga/config.json') do
  it { should be_owned_by 'root' }
  its('group') { should eq 'sqsaga' }
  its('mode') { should cmp '0640' }
end

describe json('/etc/sqsaga/config.json') do
  its('service') { should eq service_name }
  its('drain_timeout') { should eq '30s' }
end

describe file("/etc/systemd/system/#{unit}.service") do
  its('content') { should match %r{^ExecStart=/opt/sqsaga/bin/sqsaga worker --service #{service_name} --config /etc/sqsaga/config\.json$} }
  its('content') { should match(/^TimeoutStopSec=60s$/) }
  its('content') { should match(/^KillSignal=SIGTERM$/) }
  its('content') { should match(/^User=sqsaga$/) }
end

describe service(unit) do
  it { should be_installed }
  it { should be_enabled }
  it { should be_running }
end

# The binary serves health and readiness on 127.0.0.1:8080.
describe http('http://127.0.0.1:8080/healthz') do
  its('status') { should cmp 200 }
end

describe http('http://127.0.0.1:8080/readyz') do
  its('status') { should cmp 200 }
end
