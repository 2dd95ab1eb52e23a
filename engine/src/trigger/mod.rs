//! What starts runs besides a person: cron schedules (`cron`, `schedule`) and events
//! (`events`: Alertmanager notifications and generic webhooks matched against `on:`).

pub mod cron;
pub mod events;
pub mod schedule;
