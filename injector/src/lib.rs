//! gembok-injector (filled by the injector issue).
