//! The admin listener: health, readiness, metrics, projections, checkpoint push, status page.
