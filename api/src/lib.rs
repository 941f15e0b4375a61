//! The regindex API.
pub mod web;
