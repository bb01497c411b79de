//! What `claimrules serve` prints once it listens: where, and what a newcomer needs to log in
//! (with the embedded default, the generated client secret and password).

use std::net::SocketAddr;

use claimrules::server::Prepared;

/// Prints the banner on stdout and flushes it (tests and scripts wait for its first line).
pub fn print(p: &Prepared, local: SocketAddr) {
    let cfg = &p.state.config;
    println!("claimrules listening on http://{local}");
    println!("  issuer:        {}", cfg.issuer);
    if let Some(c) = cfg.clients.first() {
        println!("  client_id:     {}", c.client_id);
        match &p.demo {
            Some(d) => println!("  client_secret: {}", d.client_secret),
            None => println!("  client_secret: (from the config file)"),
        }
        if let Some(r) = c.redirect_uris.first() {
            println!("  redirect_uri:  {r}");
        }
    }
    if let Some(a) = cfg.apis.first() {
        println!("  audience:      {}", a.identifier);
    }
    if let Some(u) = cfg.users.first() {
        println!("  email:         {}", u.email);
        match &p.demo {
            Some(d) => println!("  password:      {}", d.password),
            None => println!("  password:      (from the config file)"),
        }
    }
    println!(
        "  rules:         {} (version {})",
        cfg.rules.display(),
        p.rules.current().version
    );
    let authorize = format!(
        "{}authorize?response_type=code&client_id={}&redirect_uri={}&scope=openid%20profile%20email%20offline_access%20read:contacts&audience={}&state=xyz",
        cfg.issuer,
        cfg.clients.first().map(|c| c.client_id.as_str()).unwrap_or(""),
        cfg.clients
            .first()
            .and_then(|c| c.redirect_uris.first())
            .map(|r| url::form_urlencoded::byte_serialize(r.as_bytes()).collect::<String>())
            .unwrap_or_default(),
        cfg.apis
            .first()
            .map(|a| url::form_urlencoded::byte_serialize(a.identifier.as_bytes()).collect::<String>())
            .unwrap_or_default(),
    );
    println!("  open:          {authorize}");
    use std::io::Write;
    let _ = std::io::stdout().flush();
}
