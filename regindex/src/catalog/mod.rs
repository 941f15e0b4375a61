//! What people see of a repository: its title and description, the search over them and
//! the icons its images carry (pure; the SQL is in `store`, the pages and routes in the api).

pub mod describe;
pub mod icons;
pub mod search;
