//go:build tools

// Pins toxiproxy's server for build-toxiproxy.sh, which builds its cmd/server package.
package tools

import _ "github.com/Shopify/toxiproxy/v2/cmd/server"
