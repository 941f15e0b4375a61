//! The regindex API.
