import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.ScramCredentialInfo;
import org.apache.kafka.clients.admin.ScramMechanism;
import org.apache.kafka.clients.admin.UserScramCredentialAlteration;
import org.apache.kafka.clients.admin.UserScramCredentialUpsertion;
import org.apache.kafka.common.acl.AccessControlEntry;
import org.apache.kafka.common.acl.AclBinding;
import org.apache.kafka.common.acl.AclBindingFilter;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.acl.AclPermissionType;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourceType;

/**
 * Applies deploy/kafka/access to a cluster in one JVM (the ACL command line tool takes one
 * JVM start per resource type and principal): upserts a SCRAM-SHA-512 credential per
 * principal from the passwords file (NAME=PASSWORD lines), creates the listed ACLs and
 * deletes ACLs of those principals that the file no longer lists. Idempotent.
 *
 * <p>java -cp 'kafka/libs/*' KafkaAccess.java BOOTSTRAP ACCESS_FILE PASSWORDS_FILE [CLIENT_PROPERTIES]
 *
 * <p>CLIENT_PROPERTIES: the admin client's own security settings (security.protocol,
 * sasl.jaas.config, ssl.truststore.*) for a cluster whose only listeners are secured.
 */
public class KafkaAccess {
    public static void main(String[] args) throws Exception {
        if (args.length != 3 && args.length != 4) {
            System.err.println("usage: KafkaAccess BOOTSTRAP ACCESS_FILE PASSWORDS_FILE [CLIENT_PROPERTIES]");
            System.exit(2);
        }
        Set<AclBinding> wanted = new HashSet<>();
        Set<String> principals = new HashSet<>();
        int lineNo = 0;
        for (String raw : Files.readAllLines(Path.of(args[1]))) {
            lineNo++;
            String line = raw.replaceAll("#.*", "").trim();
            if (line.isEmpty()) continue;
            String[] f = line.split("\\s+");
            if (f.length != 5) fail(args[1], lineNo, "want: principal resource pattern name operations");
            String principal = "User:" + f[0];
            principals.add(principal);
            ResourceType type = switch (f[1]) {
                case "topic" -> ResourceType.TOPIC;
                case "group" -> ResourceType.GROUP;
                case "transactional-id" -> ResourceType.TRANSACTIONAL_ID;
                case "cluster" -> ResourceType.CLUSTER;
                default -> throw fail(args[1], lineNo, "resource " + f[1] + ": use topic, group, transactional-id or cluster");
            };
            PatternType pattern = PatternType.fromString(f[2].toUpperCase(Locale.ROOT));
            if (pattern != PatternType.LITERAL && pattern != PatternType.PREFIXED)
                fail(args[1], lineNo, "pattern " + f[2] + ": use literal or prefixed");
            for (String op : f[4].split(",")) {
                AclOperation operation = AclOperation.fromString(op.replace("-", "_").toUpperCase(Locale.ROOT));
                if (operation == AclOperation.UNKNOWN) fail(args[1], lineNo, "operation " + op);
                wanted.add(new AclBinding(new ResourcePattern(type, f[3], pattern),
                        new AccessControlEntry(principal, "*", operation, AclPermissionType.ALLOW)));
            }
        }
        Map<String, String> passwords = new LinkedHashMap<>();
        for (String line : Files.readAllLines(Path.of(args[2]))) {
            int eq = line.indexOf('=');
            if (eq > 0) passwords.put(line.substring(0, eq), line.substring(eq + 1));
        }
        for (String principal : principals) {
            if (!passwords.containsKey(principal.substring(5)))
                throw new IllegalStateException("no password for " + principal + " in " + args[2]);
        }

        Properties props = new Properties();
        if (args.length == 4) {
            try (var reader = Files.newBufferedReader(Path.of(args[3]))) {
                props.load(reader);
            }
        }
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "60000");
        try (Admin admin = Admin.create(props)) {
            List<UserScramCredentialAlteration> users = new ArrayList<>();
            ScramCredentialInfo info = new ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192);
            for (String principal : principals) {
                String name = principal.substring(5);
                users.add(new UserScramCredentialUpsertion(name, info, passwords.get(name)));
            }
            admin.alterUserScramCredentials(users).all().get(60, TimeUnit.SECONDS);

            List<AclBinding> stale = new ArrayList<>();
            Set<AclBinding> present = new HashSet<>();
            for (AclBinding binding : admin.describeAcls(AclBindingFilter.ANY).values().get(60, TimeUnit.SECONDS)) {
                if (!principals.contains(binding.entry().principal())) continue;
                if (wanted.contains(binding)) present.add(binding);
                else stale.add(binding);
            }
            List<AclBinding> missing = wanted.stream().filter(b -> !present.contains(b)).toList();
            if (!missing.isEmpty()) admin.createAcls(missing).all().get(60, TimeUnit.SECONDS);
            if (!stale.isEmpty())
                admin.deleteAcls(stale.stream().map(AclBinding::toFilter).toList()).all().get(60, TimeUnit.SECONDS);
            System.out.printf("%d principals, %d ACLs (%d created, %d removed)%n",
                    principals.size(), wanted.size(), missing.size(), stale.size());
        }
    }

    private static IllegalArgumentException fail(String file, int line, String message) {
        throw new IllegalArgumentException(file + ":" + line + ": " + message);
    }
}
