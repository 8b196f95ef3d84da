pub fn write(_d: &std::path::Path) -> Result<(), String> { Ok(()) }
