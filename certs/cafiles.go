package certs

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// raceWait bounds how long NewLocalCA waits for another process that is writing the same CA files:
// the writer places the certificate first and the key second, so a certificate without its key may be
// a write in progress. A variable so that tests can shorten it.
var raceWait = 2 * time.Second

// loadOrCreateRoot implements the CertFile/KeyFile rules documented on LocalCAConfig.
func loadOrCreateRoot(cfg LocalCAConfig) (*x509.Certificate, crypto.Signer, error) {
	switch {
	case cfg.CertFile == "" && cfg.KeyFile == "":
		return newRoot(cfg.TrustDomain, cfg.Now())
	case cfg.CertFile == "":
		return nil, nil, fmt.Errorf("local CA: key file %q is set but the certificate file (CA_CERT) is not", cfg.KeyFile)
	case cfg.KeyFile == "":
		return nil, nil, fmt.Errorf("local CA: certificate file %q is set but the key file (CA_KEY) is not", cfg.CertFile)
	}
	certOK, err := fileExists(cfg.CertFile)
	if err != nil {
		return nil, nil, err
	}
	keyOK, err := fileExists(cfg.KeyFile)
	if err != nil {
		return nil, nil, err
	}
	switch {
	case certOK && keyOK:
		return loadRoot(cfg.CertFile, cfg.KeyFile, cfg.Now())
	case certOK:
		return waitAndLoad(cfg)
	case keyOK:
		return nil, nil, fmt.Errorf("local CA: certificate file %q does not exist but key file %q does", cfg.CertFile, cfg.KeyFile)
	}
	root, key, err := newRoot(cfg.TrustDomain, cfg.Now())
	if err != nil {
		return nil, nil, err
	}
	err = writeRoot(cfg.CertFile, cfg.KeyFile, root, key)
	if errors.Is(err, fs.ErrExist) {
		// Another process is creating the files: use its root so that all of us agree.
		return waitAndLoad(cfg)
	}
	if err != nil {
		return nil, nil, err
	}
	return root, key, nil
}

func fileExists(path string) (bool, error) {
	_, err := os.Stat(path)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	default:
		return false, fmt.Errorf("local CA: %w", err)
	}
}

// waitAndLoad waits up to raceWait for the key file (written after the certificate) and loads both.
func waitAndLoad(cfg LocalCAConfig) (*x509.Certificate, crypto.Signer, error) {
	deadline := time.Now().Add(raceWait)
	for {
		ok, err := fileExists(cfg.KeyFile)
		if err != nil {
			return nil, nil, err
		}
		if ok {
			return loadRoot(cfg.CertFile, cfg.KeyFile, cfg.Now())
		}
		if time.Now().After(deadline) {
			return nil, nil, fmt.Errorf("local CA: key file %q does not exist but certificate file %q does", cfg.KeyFile, cfg.CertFile)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// loadRoot reads and checks a CA certificate and its key.
func loadRoot(certFile, keyFile string, now time.Time) (*x509.Certificate, crypto.Signer, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, nil, fmt.Errorf("local CA: read certificate: %w", err)
	}
	certs, err := ParseCertificatesPEM(certPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("local CA: certificate file %q: %w", certFile, err)
	}
	root := certs[0]
	if !root.BasicConstraintsValid || !root.IsCA {
		return nil, nil, fmt.Errorf("local CA: certificate file %q: not a CA certificate (basic constraints CA:TRUE missing)", certFile)
	}
	if root.KeyUsage != 0 && root.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, nil, fmt.Errorf("local CA: certificate file %q: key usage lacks certSign", certFile)
	}
	if now.After(root.NotAfter) {
		return nil, nil, fmt.Errorf("local CA: certificate file %q: expired at %s", certFile, root.NotAfter.Format(time.RFC3339))
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("local CA: read key: %w", err)
	}
	key, err := parsePrivateKeyPEM(keyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("local CA: key file %q: %w", keyFile, err)
	}
	if !publicKeysEqual(key.Public(), root.PublicKey) {
		return nil, nil, fmt.Errorf("local CA: key file %q does not match certificate file %q", keyFile, certFile)
	}
	return root, key, nil
}

// parsePrivateKeyPEM returns the first private key in data: PKCS#8 "PRIVATE KEY", SEC1
// "EC PRIVATE KEY" or PKCS#1 "RSA PRIVATE KEY". Other blocks (e.g. "EC PARAMETERS") are skipped.
func parsePrivateKeyPEM(data []byte) (crypto.Signer, error) {
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, errors.New("no PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY PEM block")
		}
		var key any
		var err error
		switch block.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("parse %s: %w", block.Type, err)
		}
		signer, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("unsupported key type %T", key)
		}
		return signer, nil
	}
}

// writeRoot writes the certificate (mode 0644) and then the key (mode 0600, PKCS#8) without ever
// replacing an existing file: each is written to a temporary file in the target directory and then
// hard-linked into place, so readers never see a partial file. If a target already exists the error
// wraps fs.ErrExist; if the key cannot be placed, the certificate written here is removed again.
func writeRoot(certFile, keyFile string, root *x509.Certificate, key crypto.Signer) error {
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("local CA: encode key: %w", err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	if err := placeFile(certFile, encodeCertsPEM([]*x509.Certificate{root}), 0o644); err != nil {
		return err
	}
	if err := placeFile(keyFile, keyPEM, 0o600); err != nil {
		_ = os.Remove(certFile)
		return err
	}
	return nil
}

// placeFile creates path with data and mode, failing with an error wrapping fs.ErrExist if it exists.
func placeFile(path string, data []byte, mode fs.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return fmt.Errorf("local CA: write %q: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Chmod(mode)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Link(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("local CA: write %q: %w", path, err)
	}
	return nil
}
