package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"time"
)

// pki holds the CA that signs the serving and client certificates, and the admin's credentials.
type pki struct {
	caCert       *x509.Certificate
	caKey        *ecdsa.PrivateKey
	caPEM        []byte
	adminCertPEM []byte
	adminKeyPEM  []byte
}

// validity of every certificate: long enough for any test run, short enough to be obviously a test's.
const validity = 7 * 24 * time.Hour

// makePKI writes DIR/pki: ca.{crt,key}, serving.{crt,key} (IP SAN 127.0.0.1), sa.{key,pub} (the
// ServiceAccount token signing key), and keeps the CA for client certificates.
func makePKI(dir string) (*pki, error) {
	pkiDir := filepath.Join(dir, "pki")
	if err := os.MkdirAll(pkiDir, 0o700); err != nil {
		return nil, err
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	caTemplate := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "kube-testenv CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTemplate, caTemplate, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	p := &pki{caCert: caCert, caKey: caKey, caPEM: pemBlock("CERTIFICATE", caDER)}
	caKeyDER, err := x509.MarshalPKCS8PrivateKey(caKey)
	if err != nil {
		return nil, err
	}
	if err := writeFiles(map[string][]byte{
		filepath.Join(pkiDir, "ca.crt"): p.caPEM,
		filepath.Join(pkiDir, "ca.key"): pemBlock("PRIVATE KEY", caKeyDER),
	}); err != nil {
		return nil, err
	}

	servingCert, servingKey, err := p.issue(x509.Certificate{
		Subject:     pkix.Name{CommonName: "kube-apiserver"},
		DNSNames:    []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("10.0.0.1")},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return nil, err
	}
	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	saPub, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return nil, err
	}
	p.adminCertPEM, p.adminKeyPEM, err = p.issue(clientTemplate("admin", []string{"system:masters"}))
	if err != nil {
		return nil, err
	}
	return p, writeFiles(map[string][]byte{
		filepath.Join(pkiDir, "serving.crt"): servingCert,
		filepath.Join(pkiDir, "serving.key"): servingKey,
		filepath.Join(pkiDir, "sa.key"):      pemBlock("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(saKey)),
		filepath.Join(pkiDir, "sa.pub"):      pemBlock("PUBLIC KEY", saPub),
	})
}

// loadPKI reads the CA that a running kube-testenv wrote into DIR/pki.
func loadPKI(dir string) (*pki, error) {
	caPEM, err := os.ReadFile(filepath.Join(dir, "pki", "ca.crt"))
	if err != nil {
		return nil, err
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, "pki", "ca.key"))
	if err != nil {
		return nil, err
	}
	certBlock, _ := pem.Decode(caPEM)
	keyBlock, _ := pem.Decode(keyPEM)
	if certBlock == nil || keyBlock == nil {
		return nil, fmt.Errorf("%s: no PEM data in ca.crt or ca.key", filepath.Join(dir, "pki"))
	}
	caCert, err := x509.ParseCertificate(certBlock.Bytes)
	if err != nil {
		return nil, err
	}
	key, err := x509.ParsePKCS8PrivateKey(keyBlock.Bytes)
	if err != nil {
		return nil, err
	}
	caKey, ok := key.(*ecdsa.PrivateKey)
	if !ok {
		return nil, errors.New("ca.key is not an ECDSA key")
	}
	return &pki{caCert: caCert, caKey: caKey, caPEM: caPEM}, nil
}

// issue signs a certificate from template (serial, validity and key usage filled in) for a new P-256
// key; it returns both as PEM, the key in PKCS#8.
func (p *pki) issue(template x509.Certificate) ([]byte, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	template.SerialNumber = serial()
	template.NotBefore = now.Add(-time.Hour)
	template.NotAfter = now.Add(validity)
	template.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, &template, p.caCert, &key.PublicKey, p.caKey)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pemBlock("CERTIFICATE", der), pemBlock("PRIVATE KEY", keyDER), nil
}

// clientTemplate is a client certificate's template: kube-apiserver reads the user from the CN and the
// groups from the O entries.
func clientTemplate(name string, groups []string) x509.Certificate {
	return x509.Certificate{
		Subject:     pkix.Name{CommonName: name, Organization: groups},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
}

var userName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9:._@-]*$`)

// writeUser writes DIR/users/NAME.kubeconfig, with the certificate and key embedded, and returns its
// path. (The admin's is DIR/admin.kubeconfig, so a user named admin cannot replace it.)
func writeUser(dir string, p *pki, server, name string, groups []string) (string, error) {
	if !userName.MatchString(name) || len(name) > 200 {
		return "", fmt.Errorf("user name %q: use letters, digits and :._@- only", name)
	}
	usersDir := filepath.Join(dir, "users")
	if err := os.MkdirAll(usersDir, 0o700); err != nil {
		return "", err
	}
	return writeKubeconfig(filepath.Join(usersDir, name+".kubeconfig"), p, server, name, groups)
}

// writeKubeconfig writes a kubeconfig for a new client certificate of user name in groups to path.
func writeKubeconfig(path string, p *pki, server, name string, groups []string) (string, error) {
	cert, key, err := p.issue(clientTemplate(name, groups))
	if err != nil {
		return "", err
	}
	b64 := base64.StdEncoding.EncodeToString
	config := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: kube-testenv
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: %q
  user:
    client-certificate-data: %s
    client-key-data: %s
contexts:
- name: kube-testenv
  context:
    cluster: kube-testenv
    user: %q
    namespace: default
current-context: kube-testenv
`, server, b64(p.caPEM), name, b64(cert), b64(key), name)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(config), 0o600); err != nil {
		return "", err
	}
	return path, os.Rename(tmp, path)
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return big.NewInt(time.Now().UnixNano())
	}
	return n
}

func pemBlock(kind string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der})
}

func writeFiles(files map[string][]byte) error {
	for path, data := range files {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return fmt.Errorf("writing %s: %w", path, err)
		}
	}
	return nil
}
