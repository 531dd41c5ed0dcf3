#!/usr/bin/env bash
# Start any of the machine's local services that is down (best effort: each start is
# skipped where the service is not installed). Tests that need one skip or fail by themselves.
set -u

up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start() {
  local port=$1; shift
  if up "$port"; then return 0; fi
  echo "starting service on port $port: $*"
  "$@" >/dev/null 2>&1 || echo "  (could not start: $1)"
}

if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
  start 5432 pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
fi
command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] && \
  start 3306 start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
command -v redis-server >/dev/null 2>&1 && \
  start 6379 redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
command -v rabbitmq-server >/dev/null 2>&1 && start 5672 rabbitmq-server -detached
command -v mosquitto >/dev/null 2>&1 && start 1883 mosquitto -d -c /etc/mosquitto/mosquitto.conf
[ -x /usr/sbin/nats-server ] && \
  start 4222 start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
exit 0
