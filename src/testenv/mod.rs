//! Local control plane.
