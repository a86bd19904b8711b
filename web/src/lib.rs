//! pgbastion console (filled by the console issue).
