//! The runtime's WebCrypto (`crypto.subtle`): native signing instead of elliptic-curve and RSA
//! arithmetic compiled into the wasm. ES256 for the sender identity (`identity`), RSA for DKIM
//! (`domains`). Imported ES256 keys are kept for the isolate's life, keyed by their JWK.

use std::cell::RefCell;

use serde_json::Value;
use wasm_bindgen::prelude::*;
use worker::js_sys::{self, Uint8Array};
use worker::wasm_bindgen_futures::JsFuture;

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = ["crypto", "subtle"], js_name = generateKey, catch)]
    fn subtle_generate_key(algorithm: &JsValue, extractable: bool, usages: &JsValue) -> Result<js_sys::Promise, JsValue>;
    #[wasm_bindgen(js_namespace = ["crypto", "subtle"], js_name = exportKey, catch)]
    fn subtle_export_key(format: &str, key: &JsValue) -> Result<js_sys::Promise, JsValue>;
    #[wasm_bindgen(js_namespace = ["crypto", "subtle"], js_name = importKey, catch)]
    fn subtle_import_key(format: &str, data: &JsValue, algorithm: &JsValue, extractable: bool, usages: &JsValue) -> Result<js_sys::Promise, JsValue>;
    #[wasm_bindgen(js_namespace = ["crypto", "subtle"], js_name = sign, catch)]
    fn subtle_sign(algorithm: &JsValue, key: &JsValue, data: &Uint8Array) -> Result<js_sys::Promise, JsValue>;
    #[wasm_bindgen(js_namespace = ["crypto", "subtle"], js_name = verify, catch)]
    fn subtle_verify(algorithm: &JsValue, key: &JsValue, signature: &Uint8Array, data: &Uint8Array) -> Result<js_sys::Promise, JsValue>;
    #[wasm_bindgen(js_namespace = JSON, js_name = parse, catch)]
    fn json_parse(text: &str) -> Result<JsValue, JsValue>;
}

fn js_err(what: &str) -> impl Fn(JsValue) -> worker::Error + '_ {
    move |e| worker::Error::RustError(format!("{what}: {e:?}"))
}

async fn await_promise(p: Result<js_sys::Promise, JsValue>, what: &str) -> worker::Result<JsValue> {
    JsFuture::from(p.map_err(js_err(what))?).await.map_err(js_err(what))
}

fn object(pairs: &[(&str, JsValue)]) -> worker::Result<JsValue> {
    let o = js_sys::Object::new();
    for (k, v) in pairs {
        js_sys::Reflect::set(&o, &(*k).into(), v).map_err(js_err("WebCrypto"))?;
    }
    Ok(o.into())
}

fn rsassa() -> worker::Result<JsValue> {
    object(&[("name", "RSASSA-PKCS1-v1_5".into()), ("hash", "SHA-256".into())])
}

/// A fresh RSA-2048 key pair: (SubjectPublicKeyInfo DER, PKCS#8 DER).
pub async fn generate_rsa() -> worker::Result<(Vec<u8>, Vec<u8>)> {
    let algo = rsassa()?;
    js_sys::Reflect::set(&algo, &"modulusLength".into(), &JsValue::from(2048)).map_err(js_err("WebCrypto"))?;
    js_sys::Reflect::set(&algo, &"publicExponent".into(), &Uint8Array::from(&[1u8, 0, 1][..])).map_err(js_err("WebCrypto"))?;
    let usages = js_sys::Array::of2(&"sign".into(), &"verify".into());
    let pair = await_promise(subtle_generate_key(&algo, true, &usages), "RSA key generation").await?;
    let public = js_sys::Reflect::get(&pair, &"publicKey".into()).map_err(js_err("RSA key generation"))?;
    let private = js_sys::Reflect::get(&pair, &"privateKey".into()).map_err(js_err("RSA key generation"))?;
    let spki = await_promise(subtle_export_key("spki", &public), "RSA public key export").await?;
    let pkcs8 = await_promise(subtle_export_key("pkcs8", &private), "RSA private key export").await?;
    Ok((Uint8Array::new(&spki).to_vec(), Uint8Array::new(&pkcs8).to_vec()))
}

/// RSASSA-PKCS1-v1_5 with SHA-256 over `data` (WebCrypto hashes it).
pub async fn rsa_sign(pkcs8: &[u8], data: &[u8]) -> worker::Result<Vec<u8>> {
    let algo = rsassa()?;
    let usages = js_sys::Array::of1(&"sign".into());
    let key = await_promise(subtle_import_key("pkcs8", &Uint8Array::from(pkcs8).into(), &algo, false, &usages), "RSA key import").await?;
    let sig = await_promise(subtle_sign(&"RSASSA-PKCS1-v1_5".into(), &key, &Uint8Array::from(data)), "RSA signing").await?;
    Ok(Uint8Array::new(&sig).to_vec())
}

fn ecdsa_p256() -> worker::Result<JsValue> {
    object(&[("name", "ECDSA".into()), ("namedCurve", "P-256".into())])
}

fn ecdsa_sha256() -> worker::Result<JsValue> {
    object(&[("name", "ECDSA".into()), ("hash", "SHA-256".into())])
}

thread_local! {
    /// Imported signing keys, by their JWK text (a deployment has two or three).
    static ES256_KEYS: RefCell<Vec<(String, JsValue)>> = const { RefCell::new(Vec::new()) };
}

async fn es256_key(jwk: &Value, usage: &str) -> worker::Result<JsValue> {
    let text = format!("{usage}:{jwk}");
    if let Some(k) = ES256_KEYS.with(|c| c.borrow().iter().find(|(t, _)| *t == text).map(|(_, k)| k.clone())) {
        return Ok(k);
    }
    let js_jwk = json_parse(&jwk.to_string()).map_err(js_err("JWK"))?;
    let usages = js_sys::Array::of1(&usage.into());
    let key = await_promise(subtle_import_key("jwk", &js_jwk, &ecdsa_p256()?, false, &usages), "P-256 key import").await?;
    ES256_KEYS.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= 8 {
            c.remove(0);
        }
        c.push((text, key.clone()));
    });
    Ok(key)
}

/// ECDSA P-256 with SHA-256 over `data` by the private JWK: the 64-byte `r‖s` a JWS carries.
pub async fn es256_sign(private_jwk: &Value, data: &[u8]) -> worker::Result<Vec<u8>> {
    let key = es256_key(private_jwk, "sign").await?;
    let sig = await_promise(subtle_sign(&ecdsa_sha256()?, &key, &Uint8Array::from(data)), "ES256 signing").await?;
    Ok(Uint8Array::new(&sig).to_vec())
}

/// Whether `signature` (64-byte `r‖s`) is the public JWK's ES256 signature of `data`.
pub async fn es256_verify(public_jwk: &Value, data: &[u8], signature: &[u8]) -> worker::Result<bool> {
    let key = es256_key(public_jwk, "verify").await?;
    let ok = await_promise(subtle_verify(&ecdsa_sha256()?, &key, &Uint8Array::from(signature), &Uint8Array::from(data)), "ES256 verification").await?;
    Ok(ok.as_bool().unwrap_or(false))
}
