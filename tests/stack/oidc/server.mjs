// An OpenID provider for the OAUTHBEARER tests: npm's oidc-provider (a certified
// implementation) with the client-credentials grant and JWT access tokens for one resource.
//
//   node server.mjs CONFIG.json
//
// CONFIG: {issuer, port, clients: [{client_id, client_secret}], resource, tokenTTL, keysFile}.
// The signing key is made once and kept in keysFile, so a restart on the same port serves the
// same keys (a token issued before the restart still validates). Each token issued is logged
// as a line "token issued to CLIENT_ID" that the tests count.
import { generateKeyPairSync } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import Provider from "oidc-provider";

const config = JSON.parse(readFileSync(process.argv[2], "utf8"));

function signingKeys() {
  if (!existsSync(config.keysFile)) {
    const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
    const jwk = { ...privateKey.export({ format: "jwk" }), kid: "test-key", use: "sig", alg: "RS256" };
    writeFileSync(config.keysFile, JSON.stringify({ keys: [jwk] }));
  }
  return JSON.parse(readFileSync(config.keysFile, "utf8"));
}

const provider = new Provider(config.issuer, {
  clients: config.clients.map((client) => ({
    client_id: client.client_id,
    client_secret: client.client_secret,
    grant_types: ["client_credentials"],
    redirect_uris: [],
    response_types: [],
    token_endpoint_auth_method: client.auth_method || "client_secret_basic",
  })),
  jwks: signingKeys(),
  scopes: ["kafka"],
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => config.resource,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resource) => {
        if (resource !== config.resource) {
          throw new Error(`unknown resource ${resource}`);
        }
        return {
          scope: "kafka",
          audience: config.resource,
          accessTokenTTL: config.tokenTTL,
          accessTokenFormat: "jwt",
          jwt: { sign: { alg: "RS256" } },
        };
      },
    },
  },
  // Kafka's validator needs a subject: a client-credentials token has no account, so the
  // client is its subject
  extraTokenClaims: (ctx, token) => (token.kind === "ClientCredentials" ? { sub: token.clientId } : {}),
});

provider.on("client_credentials.issued", (token) => console.log(`token issued to ${token.clientId}`));
provider.on("grant.error", (ctx, error) => console.log(`grant error: ${error.message}`));
provider.on("server_error", (ctx, error) => console.log(`server error: ${error.stack}`));

provider.listen(config.port, "127.0.0.1", () => console.log(`listening on ${config.port}`));
