//! The operator's side: health results, control commands, reload and
//! shutdown.

use super::services::HealthResult;
use super::{Command, ManagerCore, Outgoing};
use crate::config::Config;
use std::net::SocketAddrV4;

impl ManagerCore {
    /// A health-check result for a backend (rise/fall from the service's
    /// `health`; logged and counted when the backend changes state).
    ///
    /// When it goes unhealthy, its flows are ended as for a removed backend
    /// (UDP always, TCP with `expire_nodest_conn`): the deletions are
    /// returned, to send.
    pub fn health(&mut self, service: &str, backend: SocketAddrV4, ok: bool) -> Vec<Outgoing> {
        let now = self.clock;
        self.health_check(now, service, backend, ok, None, None)
    }

    /// [`Self::health`] with the check's detail, shown by `status`: why it
    /// failed (`refused`, `timeout`, `http status 503`, ...), its latency
    /// (µs), and `now` (ns) for the time since the backend's last change.
    pub fn health_check(
        &mut self,
        now: u64,
        service: &str,
        backend: SocketAddrV4,
        ok: bool,
        failure: Option<&str>,
        latency_us: Option<u64>,
    ) -> Vec<Outgoing> {
        self.clock = self.clock.max(now);
        let mut out = Vec::new();
        let result = HealthResult {
            ok,
            failure,
            latency_us,
        };
        match self.services.health(now, service, backend, result) {
            Some(true) => tracing::info!(service, %backend, "backend healthy"),
            Some(false) => {
                tracing::warn!(service, %backend, "backend unhealthy: no new flows; its UDP flows move");
                self.count("backend-went-unhealthy");
                self.end_flows_without_backend(&mut out);
            }
            None => {}
        }
        out
    }

    /// Executes a control command; the text answer, or what is wrong.
    pub fn command(&mut self, cmd: Command, now: u64) -> Result<String, String> {
        match cmd {
            Command::Status => Ok(self.status(now)),
            Command::StatusJson => serde_json::to_string_pretty(&self.status_report(now))
                .map(|j| j + "\n")
                .map_err(|e| e.to_string()),
            Command::Metrics => Ok(self.metrics(now)),
            Command::Stats { json: false } => Ok(self.report().stats_text(now)),
            Command::Stats { json: true } => {
                serde_json::to_string_pretty(&self.report().stats(now))
                    .map(|j| j + "\n")
                    .map_err(|e| e.to_string())
            }
            Command::Connections {
                service,
                backend,
                limit,
                json,
            } => {
                if let Some(s) = &service {
                    if !self.services.as_slice().iter().any(|x| x.cfg.name == *s) {
                        return Err(format!("no service {s:?}"));
                    }
                }
                let r = self.report().connections(
                    now,
                    service.as_deref(),
                    backend,
                    limit,
                    &self.timeouts(),
                );
                // A backend the service does not have (and no flow is on,
                // as on one removed by a reload): a typo, said as one, as
                // for an unknown service, not an empty list.
                if let (Some(s), Some(b)) = (&service, backend) {
                    if r.matched == 0 && self.services.backend_mut(s, b).is_err() {
                        return Err(format!("service {s:?} has no backend {b}"));
                    }
                }
                if json {
                    serde_json::to_string_pretty(&r)
                        .map(|j| j + "\n")
                        .map_err(|e| e.to_string())
                } else {
                    Ok(super::reports::connections_text(&r))
                }
            }
            Command::SetWeight {
                service,
                backend,
                weight,
            } => {
                let b = self.services.backend_mut(&service, backend)?;
                b.weight = weight;
                // A load report scaled the old weight: it no longer holds.
                b.feedback_weight = None;
                Ok(format!(
                    "{service} {backend} weight {weight}{}\n",
                    if weight == 0 {
                        " (draining: existing flows stay)"
                    } else {
                        ""
                    }
                ))
            }
            Command::LoadReport {
                service,
                backend,
                load,
            } => {
                if load > 100 {
                    return Err(format!("load {load} is over 100 (percent)"));
                }
                let feedback = self
                    .services
                    .as_slice()
                    .iter()
                    .find(|s| s.cfg.name == service)
                    .is_some_and(|s| s.cfg.algorithm == crate::config::Algorithm::Feedback);
                let b = self.services.backend_mut(&service, backend)?;
                if !feedback {
                    return Err(format!(
                        "service {service:?} does not use the feedback algorithm; load reports are refused"
                    ));
                }
                b.report_load(load);
                Ok(format!(
                    "{service} {backend} load {load}% -> effective weight {}\n",
                    b.effective_weight()
                ))
            }
        }
    }

    /// Reloads the configuration; established flows are kept, removed
    /// services' wildcards are deleted (TTL 0) and the rest are resent now.
    /// Flows of removed backends end as for an unhealthy one (UDP moved,
    /// TCP per `expire_nodest_conn`). Runtime weights and drains survive
    /// (see `ServiceRegistry::rebuild`). `listen` and `metrics` need a
    /// restart (their sockets are bound once): a change to them is refused
    /// with an error log line and the old values stay in force.
    pub fn reload(&mut self, mut cfg: Config, now: u64) -> Vec<Outgoing> {
        let mut out = Vec::new();
        let old = self.cfg.manager.clone();
        if cfg.manager.listen != old.listen || cfg.manager.metrics != old.metrics {
            tracing::error!(
                listen = %old.listen,
                new_listen = %cfg.manager.listen,
                metrics = ?old.metrics,
                new_metrics = ?cfg.manager.metrics,
                "reload: listen and metrics cannot change without a restart; keeping the old ones"
            );
            self.count("reload-listen-metrics-refused");
            cfg.manager.listen = old.listen;
            cfg.manager.metrics = old.metrics;
        }
        let gone = self.services.take_removed(&cfg.services);
        if !gone.is_empty() {
            let msgs = self.messages.wildcards(&gone, 0);
            self.fan_out(msgs, &mut out);
        }
        self.auth = cfg.auth_policy();
        self.messages.reconfigure(&cfg, &self.auth);
        self.cfg = cfg;
        self.services.rebuild(&self.cfg.services);
        self.end_flows_without_backend(&mut out);
        self.half_open_reconfigure(&mut out);
        self.next_wildcards = now;
        self.count("config-reloads");
        out.extend(self.tick(now));
        out
    }

    /// Clean shutdown: delete our wildcards everywhere (TTL 0).
    pub fn shutdown(&mut self) -> Vec<Outgoing> {
        let mut out = Vec::new();
        self.send_wildcards(0, &mut out);
        out
    }
}
